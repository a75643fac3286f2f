import Foundation
import Logging

/// Says in the log when a run's session waits for a lock that another
/// session holds, and whose. A statement blocked by someone's open
/// transaction (a `TRUNCATE`, an `ALTER TABLE`, a psql session left idle in
/// transaction) waits as psql would, as long as that session keeps it; from
/// cron it would look like a hang.
///
/// A thread looks at each session a stage has held longer than `after`,
/// once per `after`, by asking the server from a session of its own per
/// connection (opened only then). A wait is reported when first seen, then
/// every `every` while it lasts. Nothing the other session ran is logged:
/// its statement could hold a secret.
public final class LockWaits: @unchecked Sendable {
    private struct Watched {
        let pid: Int32
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
    /// The watcher's own sessions, by connection name; touched by its thread only.
    private var observers: [String: PGConnection] = [:]

    public init(pipelineName: String, definitions: [String: ConnectionDefinition], logger: Logger,
                after: TimeInterval = 10, every: TimeInterval = 60) {
        self.definitions = definitions
        applicationName = ConnectionProvider.applicationName("runner/\(pipelineName)/lock-watch")
        self.logger = logger
        self.after = after
        self.every = every
    }

    /// Watches `session` of `connection` while `stageID` uses it.
    func watch(_ session: PGConnection, connection: String, stageID: String) {
        let now = Date()
        let entry = Watched(pid: session.backendPID, connection: connection, stageID: stageID, since: now, checked: now)
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
        var reported = entry.reported
        let reportDue = entry.reported.map { now.timeIntervalSince($0) >= every } ?? true
        if reportDue, let blockers = try? blockers(of: entry) {
            var logger = self.logger
            logger[metadataKey: "stage"] = .string(entry.stageID)
            logger.warning("\(blockers.message(connection: entry.connection))")
            reported = now
        }
        condition.withLock {
            // Still the same use of the session (it may have been given back and taken again).
            guard watched[key]?.since == entry.since else { return }
            watched[key]?.checked = now
            watched[key]?.reported = reported
        }
    }

    /// What a session waits for, for how long, and behind whom.
    struct Blockers: Equatable {
        let lock: String
        let seconds: Int
        let holders: [String]

        func message(connection: String) -> String {
            "a statement on connection '\(connection)' has waited \(seconds) s for \(lock), blocked by "
                + holders.joined(separator: "; ")
                + "; it goes on once they end their transactions (pg_terminate_backend(pid) ends one)"
        }
    }

    private func blockers(of entry: Watched) throws -> Blockers? {
        let observer = try observer(for: entry.connection)
        do {
            return try Self.blockers(of: entry.pid, asking: observer)
        } catch {
            observers[entry.connection] = nil  // opened again next time
            throw error
        }
    }

    private func observer(for connection: String) throws -> PGConnection {
        if let open = observers[connection] { return open }
        guard let definition = definitions[connection] else { throw StageFailure.config("connection '\(connection)' is not defined") }
        let opened = try PGConnection(definition.info, applicationName: applicationName, name: connection)
        observers[connection] = opened
        return opened
    }

    /// Asks the server what backend `pid` waits for. Only what pg_locks and
    /// pg_stat_activity show any role is used: a holder of another role shows
    /// no state, and nobody's statement is read.
    static func blockers(of pid: Int32, asking observer: PGConnection) throws -> Blockers? {
        let found = try observer.query("""
            SELECT CASE WHEN l.locktype = 'transactionid' THEN 'rows another transaction is changing'
                        ELSE coalesce(l.mode || ' on ' || l.relation::regclass::text, l.mode || ' (' || l.locktype || ')') END,
                   extract(epoch FROM clock_timestamp() - a.query_start)::bigint::text, b.pid::text, b.application_name, b.usename, b.state,
                   to_char(b.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
            FROM pg_stat_activity a
            JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
            CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS blocker(pid)
            LEFT JOIN pg_stat_activity b ON b.pid = blocker.pid
            WHERE a.pid = $1 AND a.wait_event_type = 'Lock'
            ORDER BY b.pid
            """, [String(pid)])
        guard found.rowCount > 0, let lock = found.string(0, 0) else { return nil }
        let holders = (0..<found.rowCount).map { row -> String in
            var details: [String] = []
            if let name = found.string(row, 3), !name.isEmpty { details.append("application '\(name)'") }
            if let user = found.string(row, 4) { details.append("user '\(user)'") }
            if let state = found.string(row, 5) { details.append(state) }
            if let since = found.string(row, 6) { details.append("in a transaction since \(since)") }
            return "pid \(found.string(row, 2) ?? "?")" + (details.isEmpty ? "" : " (\(details.joined(separator: ", ")))")
        }
        return Blockers(lock: lock, seconds: found.string(0, 1).flatMap { Int($0) } ?? 0, holders: holders)
    }
}
