import Foundation
import Logging

/// Says in the log when a run's session has waited long for a lock, and for
/// whom. A statement blocked by someone's open transaction (a `TRUNCATE`, an
/// `ALTER TABLE`, a psql session left idle in a transaction) waits as psql
/// would, as long as that session keeps it; from cron it would look like a hang.
///
/// A thread looks at each session a stage has held longer than `after`, once
/// per `after`, asking the server from a session of its own per connection
/// (opened only then, kept until the run ends). A wait is reported once it
/// has lasted `after`, then every `every` while it lasts. Nothing the other
/// sessions ran is logged: a statement could hold a secret.
public final class LockWaits: @unchecked Sendable {
    private struct Watched {
        let pid: Int32
        let applicationName: String
        let connection: String
        let stageID: String
        let since: Date
        var checked: Date
        var reported: Date?
    }

    private let condition = NSCondition()
    private var watched: [ObjectIdentifier: Watched] = [:]
    private var stopped = false
    private var started = false
    private let definitions: [String: ConnectionDefinition]
    private let applicationName: String
    private let logger: Logger
    private let after: TimeInterval
    private let every: TimeInterval
    // Touched by the watcher thread only.
    private var observers: [String: PGConnection] = [:]
    private var unreachable: [String: Date] = [:]

    public init(pipelineName: String, definitions: [String: ConnectionDefinition], logger: Logger,
                after: TimeInterval = 10, every: TimeInterval = 60) {
        self.definitions = definitions
        applicationName = ConnectionProvider.applicationName("runner/\(pipelineName)/lock-watch")
        self.logger = logger
        self.after = max(after, 0.05)
        self.every = max(every, self.after)
    }

    /// Watches `session` of `connection` while `stageID` uses it under `applicationName`.
    func watch(_ session: PGConnection, connection: String, stageID: String, applicationName: String) {
        let now = Date()
        let entry = Watched(pid: session.backendPID, applicationName: applicationName, connection: connection,
                            stageID: stageID, since: now, checked: now)
        condition.withLock {
            guard !stopped else { return }
            watched[ObjectIdentifier(session)] = entry
            if !started {
                started = true
                let thread = Thread { [self] in watchUntilStopped() }
                thread.stackSize = 1 << 20
                thread.start()
            }
        }
    }

    func unwatch(_ session: PGConnection) {
        _ = condition.withLock { watched.removeValue(forKey: ObjectIdentifier(session)) }
    }

    /// Ends the watching (the run ended); the watcher's sessions close.
    public func stop() {
        condition.withLock {
            stopped = true
            condition.broadcast()
        }
    }

    private func watchUntilStopped() {
        while true {
            let due = condition.withLock { () -> [(ObjectIdentifier, Watched)]? in
                _ = condition.wait(until: Date().addingTimeInterval(min(after, 1)))
                guard !stopped else { return nil }
                let now = Date()
                return watched.filter { now.timeIntervalSince($0.value.checked) >= after }.map { ($0.key, $0.value) }
            }
            guard let due else { break }
            for (key, entry) in due { check(key, entry) }
        }
        observers = [:]
    }

    private func check(_ key: ObjectIdentifier, _ entry: Watched) {
        let now = Date()
        let reportDue = entry.reported.map { now.timeIntervalSince($0) >= every } ?? true
        let wait = reportDue ? lockWait(of: entry) : nil
        let stillInUse = condition.withLock { () -> Bool in
            // The same use of the session: it may have gone back to the pool and on to another stage.
            guard watched[key]?.since == entry.since else { return false }
            watched[key]?.checked = now
            if wait != nil { watched[key]?.reported = now }
            return true
        }
        guard stillInUse, let wait else { return }
        var logger = self.logger
        logger[metadataKey: "stage"] = .string(entry.stageID)
        logger.warning("\(wait.message(connection: entry.connection))")
    }

    private func lockWait(of entry: Watched) -> LockWait? {
        if let failed = unreachable[entry.connection], Date().timeIntervalSince(failed) < every { return nil }
        do {
            let wait = try Self.lockWait(of: entry.pid, named: entry.applicationName, longerThan: after,
                                         asking: try observer(for: entry.connection))
            unreachable[entry.connection] = nil
            return wait
        } catch {
            // Opened again next time; said once a minute at most: the run itself goes on.
            observers[entry.connection] = nil
            unreachable[entry.connection] = Date()
            logger.info("cannot look for lock waits", metadata: ["connection": .string(entry.connection),
                                                                 "error": .string("\(error)")])
            return nil
        }
    }

    private func observer(for connection: String) throws -> PGConnection {
        if let open = observers[connection] { return open }
        guard let definition = definitions[connection] else { throw StageFailure.config("connection '\(connection)' is not defined") }
        let opened = try PGConnection(definition.info, applicationName: applicationName, name: connection)
        observers[connection] = opened
        return opened
    }

    /// A lock a session has waited for, and the sessions ahead of it.
    struct LockWait: Equatable {
        let lock: String
        let seconds: Int
        let blockers: [String]

        func message(connection: String) -> String {
            "a statement on connection '\(connection)' has waited \(seconds) s for \(lock), blocked by "
                + blockers.joined(separator: "; ")
                + "; it goes on once the holders end their transactions (pg_terminate_backend(pid) ends one)"
        }
    }

    /// What backend `pid` has waited for longer than `seconds`, if anything.
    /// The application name must match too: behind a pooler, or with several
    /// hosts in the conninfo, the pid may be another server's. Only what
    /// pg_locks and pg_stat_activity show any role is used (a session of
    /// another role shows no state), and nobody's statement is read.
    static func lockWait(of pid: Int32, named applicationName: String, longerThan seconds: TimeInterval,
                         asking observer: PGConnection) throws -> LockWait? {
        // The lock table is read only for a session that is waiting at all.
        let waiting = try observer.query("""
            SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND application_name = $2 AND wait_event_type = 'Lock'
            """, [String(pid), applicationName])
        guard waiting.rowCount > 0 else { return nil }
        let found = try observer.query("""
            SELECT CASE WHEN l.locktype = 'transactionid' THEN 'rows another transaction is changing'
                        ELSE coalesce(l.mode || ' on ' || l.relation::regclass::text, l.mode || ' (' || l.locktype || ')') END,
                   extract(epoch FROM clock_timestamp() - l.waitstart)::bigint::text,
                   b.pid::text,
                   EXISTS (SELECT FROM pg_locks h WHERE h.pid = b.pid AND h.granted AND h.locktype = l.locktype
                             AND h.database IS NOT DISTINCT FROM l.database AND h.relation IS NOT DISTINCT FROM l.relation
                             AND h.page IS NOT DISTINCT FROM l.page AND h.tuple IS NOT DISTINCT FROM l.tuple
                             AND h.transactionid IS NOT DISTINCT FROM l.transactionid
                             AND h.classid IS NOT DISTINCT FROM l.classid AND h.objid IS NOT DISTINCT FROM l.objid
                             AND h.objsubid IS NOT DISTINCT FROM l.objsubid),
                   s.application_name, s.usename, s.state,
                   to_char(s.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
            FROM pg_locks l
            CROSS JOIN LATERAL (SELECT DISTINCT unnest(pg_blocking_pids(l.pid))) AS b(pid)
            LEFT JOIN pg_stat_activity s ON s.pid = b.pid
            WHERE l.pid = $1 AND NOT l.granted AND l.waitstart <= clock_timestamp() - make_interval(secs => $2)
            ORDER BY 4 DESC, b.pid
            """, [String(pid), String(seconds)])
        guard found.rowCount > 0, let lock = found.string(0, 0) else { return nil }
        let blockers = (0..<found.rowCount).map { row -> String in
            // Holding any lock on the object: it may itself be queued for a stronger one.
            var details = [found.string(row, 3) == "t" ? "holds a lock on it" : "waits for it too, ahead"]
            if found.string(row, 2) == "0" { details.append("a prepared transaction: COMMIT PREPARED or ROLLBACK PREPARED ends it") }
            if let name = found.string(row, 4), !name.isEmpty { details.append("application '\(name)'") }
            if let user = found.string(row, 5) { details.append("user '\(user)'") }
            if let state = found.string(row, 6) { details.append(state) }
            if let since = found.string(row, 7) { details.append("in a transaction since \(since)") }
            return "pid \(found.string(row, 2) ?? "?") (\(details.joined(separator: ", ")))"
        }
        return LockWait(lock: lock, seconds: found.string(0, 1).flatMap { Int($0) } ?? 0, blockers: blockers)
    }
}
