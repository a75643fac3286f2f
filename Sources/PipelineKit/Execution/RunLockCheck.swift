import Foundation

/// Proves, inside a warehouse write transaction, that the run still holds
/// its lock. The lock lives in a session of its own; if the server ends that
/// session (an administrator's pg_terminate_backend, a dropped connection),
/// the lock is gone while the run goes on, and another run could write at
/// the same time.
///
/// A write takes a shared transaction lock on a second key, then checks
/// that the run's lock session still holds the run lock. A run taking the
/// lock takes that second key exclusively once, so it waits for every write
/// that passed the check to end, and every later write of the old run finds
/// the lock gone and fails.
public struct RunLockCheck: Sendable {
    let lockKey: String
    let barrierKey: String
    let holderPID: Int32

    static func barrierKey(for pipeline: String) -> String { "pipelinekit-writes:" + pipeline }

    /// Fails the write (nothing of it commits) when the run lost its lock.
    public func verify(_ connection: PGConnection) throws {
        try connection.query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", [barrierKey])
        let held = try connection.query("""
            SELECT EXISTS (SELECT FROM pg_locks
                           WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' AND pid = $2
                             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                             AND (classid::bigint << 32 | objid::bigint) = (hashtextextended($1, 0) & x'ffffffffffffffff'::bigint))
            """, [lockKey, String(holderPID)])
        guard held.string(0, 0) == "t" else { throw RunLockLost(lockKey: lockKey, holderPID: holderPID) }
    }
}

/// The run's lock session ended while the run went on; its writes stop (never retried).
public struct RunLockLost: Error, CustomStringConvertible {
    public let lockKey: String
    public let holderPID: Int32
    public var description: String {
        "the run lost its lock '\(lockKey)': the session holding it (server pid \(holderPID)) ended (terminated, or its connection dropped), so another run could write at the same time; nothing of this write was committed. Run the pipeline again: it takes the lock anew, and finds the warehouse as the last committed writes left it"
    }
}
