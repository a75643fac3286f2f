import Foundation
import Logging

/// A PostgreSQL advisory lock per pipeline on the warehouse, held by a session
/// of its own for the whole run, so two runs of one pipeline never interleave
/// their writes. The server drops the lock if the runner dies.
final class RunLock: @unchecked Sendable {
    private let connection: PGConnection
    /// What the run's writes check that the lock is still theirs.
    let writes: RunLockCheck
    /// Whether the run had to wait for the lock (another run held it).
    let waited: Bool

    private init(connection: PGConnection, writes: RunLockCheck, waited: Bool) {
        self.connection = connection
        self.writes = writes
        self.waited = waited
    }

    /// Completes taking the lock (`connection` holds the pipeline's key):
    /// marks it as this run's, then waits for the writes of a run that lost
    /// its lock and still had a write open that found it held (RunLockCheck).
    private static func taken(_ connection: PGConnection, pipeline: String, runID: UUID, waited: Bool,
                              cancellation: Cancellation, logger: Logger) throws -> RunLock {
        let writes = RunLockCheck(pipeline: pipeline, runID: runID)
        // One round trip when no such write is open (CASE evaluates in order).
        let barrierPassed = try connection.query("""
            SELECT pg_advisory_lock(hashtextextended($1, 0)),
                   CASE WHEN pg_try_advisory_lock(hashtextextended($2, 0)) THEN pg_advisory_unlock(hashtextextended($2, 0)) END
            """, [writes.runKey, writes.barrierKey]).string(0, 1) == "t"
        if !barrierPassed {
            logger.warning("waiting for the last writes of an earlier run that lost its lock", metadata: ["lock": .string(writes.barrierKey)])
            try waitInterruptibly(for: writes.barrierKey, connection, cancellation)
            try connection.query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [writes.barrierKey])
        }
        return RunLock(connection: connection, writes: writes, waited: waited || !barrierPassed)
    }

    /// Blocks until `connection` holds the advisory lock `key`; a cancelled run interrupts the wait.
    private static func waitInterruptibly(for key: String, _ connection: PGConnection, _ cancellation: Cancellation) throws {
        cancellation.track(connection)
        defer { cancellation.untrack(connection) }
        // A cancel that came before the session was tracked interrupted nothing.
        try cancellation.check()
        try connection.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", [key])
    }

    static func key(for pipeline: String) -> String { "pipelinekit:" + pipeline }

    /// The session's application_name carries the run id, so a second run can name the holder.
    /// Cut from the front, so the run id stays.
    static func applicationName(pipeline: String, runID: UUID) -> String {
        ConnectionProvider.applicationName("runner/\(pipeline)/lock/\(runID.uuidString.lowercased())", keepingEnd: true)
    }

    static func acquire(pipeline: PipelineDefinition, runID: UUID, wait: Bool,
                        cancellation: Cancellation, logger: Logger) async throws -> RunLock? {
        guard let name = pipeline.warehouse, let definition = pipeline.connections[name] else { return nil }
        return try await onOwnThread {
            let connection = try connect(definition, pipeline: pipeline, runID: runID, cancellation: cancellation, logger: logger)
            let key = [key(for: pipeline.name)]
            if try connection.query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key).string(0, 0) == "t" {
                return try taken(connection, pipeline: pipeline.name, runID: runID, waited: false, cancellation: cancellation, logger: logger)
            }
            let holder = try connection.query("""
                SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND (l.classid::bigint << 32 | l.objid::bigint) = hashtextextended($1, 0)
                LIMIT 1
                """, key)
            let holderName = holder.rowCount > 0 ? holder.string(0, 0) ?? "" : ""
            let holderRun = holderName.split(separator: "/").last.map(String.init) ?? "unknown"
            let holderPID = holder.rowCount > 0 ? holder.string(0, 1) ?? "?" : "?"
            guard wait else {
                throw RunLockHeld(lockKey: key[0], holderRunID: holderRun, holderPID: holderPID)
            }
            logger.warning("waiting for the run lock", metadata: ["lock": .string(key[0]), "holder_run": .string(holderRun)])
            try waitInterruptibly(for: key[0], connection, cancellation)
            return try taken(connection, pipeline: pipeline.name, runID: runID, waited: true, cancellation: cancellation, logger: logger)
        }
    }

    /// Connects with the pipeline's retry policy: a warehouse that is away
    /// for a moment (restart, failover) does not fail the run.
    private static func connect(_ definition: ConnectionDefinition, pipeline: PipelineDefinition, runID: UUID,
                                cancellation: Cancellation, logger: Logger) throws -> PGConnection {
        let policy = pipeline.defaultRetry
        var attempt = 0
        while true {
            attempt += 1
            try cancellation.check()
            do {
                return try PGConnection(definition.info, applicationName: applicationName(pipeline: pipeline.name, runID: runID))
            } catch var error as PGError {
                guard error.isTransient, attempt < policy.maxAttempts, !cancellation.isCancelled else {
                    error.message = "cannot take the run lock on connection '\(definition.name)' after \(attempt) attempt\(attempt == 1 ? "" : "s"): \(error.message)"
                    throw error
                }
                let delay = policy.delay(afterAttempt: attempt, unit: Double.random(in: 0..<1))
                logger.warning("warehouse unreachable; retrying", metadata: [
                    "connection": .string(definition.name), "attempt": .stringConvertible(attempt),
                    "delay_seconds": .string(String(format: "%.2f", delay)), "error": .string(error.message)])
                cancellation.wait(seconds: delay)
            }
        }
    }

    func release() {
        _ = try? connection.execute("SELECT pg_advisory_unlock_all()")
    }
}

/// Another run of the same pipeline holds the warehouse lock.
public struct RunLockHeld: Error, CustomStringConvertible {
    public var lockKey: String
    public var holderRunID: String
    public var holderPID: String
    public var description: String {
        "another run of this pipeline is in progress: advisory lock '\(lockKey)' is held by run \(holderRunID) (server pid \(holderPID)); wait for it to finish or pass --wait"
    }
}
