import Foundation

/// Proves, inside a warehouse write transaction, that the run still holds
/// its lock. The lock lives in a session of its own; if the server ends that
/// session (an administrator's pg_terminate_backend, a dropped connection),
/// the lock is gone while the run goes on, and another run could write at
/// the same time.
///
/// Besides the pipeline's key, the lock session holds a key of its run's own
/// (no pid is compared: a pooler shows its own, and the server reuses them).
/// A write takes a shared transaction lock on a third, barrier key, then
/// checks that the run's key is still held. A run taking the pipeline's lock
/// takes the barrier key exclusively once, so it waits for every write that
/// passed the check to end, and every later write of the old run fails.
public struct RunLockCheck: Sendable {
    let pipelineKey: String
    let runKey: String
    let barrierKey: String

    init(pipeline: String, runID: UUID) {
        pipelineKey = RunLock.key(for: pipeline)
        runKey = "pipelinekit-run:" + runID.uuidString.lowercased()
        barrierKey = "pipelinekit-writes:" + pipeline
    }

    /// Fails the write (nothing of it commits) when the run lost its lock.
    public func verify(_ connection: PGConnection) throws {
        // The barrier first (the subquery is evaluated before the outer row);
        // the run's key is free for the taking only when the lock session no longer holds it.
        let free = try connection.query("""
            SELECT pg_try_advisory_xact_lock_shared(hashtextextended($2, 0))
            FROM (SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))) AS barrier
            """, [barrierKey, runKey])
        if free.string(0, 0) == "t" { throw RunLockLost(lockKey: pipelineKey) }
    }
}

/// The run's lock session ended while the run went on; its writes stop (never retried).
public struct RunLockLost: Error, CustomStringConvertible {
    public let lockKey: String
    public var description: String {
        "the run lost its lock '\(lockKey)': the session holding it ended (terminated, or its connection dropped), so another run could write at the same time; nothing of this write was committed. Run the pipeline again: it takes the lock anew, and finds the warehouse as the last committed writes left it"
    }
}
