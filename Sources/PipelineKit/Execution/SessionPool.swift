import Foundation

/// The idle sessions of one run, by pipeline connection, handed from one
/// stage to the next. Opening a PostgreSQL session starts a server process
/// (a few milliseconds) and a run opens dozens, so this is most of what a
/// short incremental run would otherwise spend connecting.
///
/// Only a session a stage finished with cleanly comes back: one whose stage
/// failed, or that is left inside a transaction or a COPY, is dropped (and
/// so closed). The taker checks that a session still works before using it.
public final class SessionPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [String: [PGConnection]] = [:]
    private var closed = false
    /// Idle sessions kept per connection; more are closed.
    private let limit: Int

    public init(limit: Int = 4) { self.limit = limit }

    /// An idle session of `connection`, if any.
    func take(_ connection: String) -> PGConnection? {
        lock.withLock { idle[connection]?.popLast() }
    }

    /// Keeps `session` for the next stage if it is idle and there is room.
    func give(_ session: PGConnection, connection: String) {
        guard session.isIdle else { return }
        lock.withLock {
            if !closed && idle[connection, default: []].count < limit { idle[connection, default: []].append(session) }
        }
    }

    /// Opens `count` sessions of each connection at once, in the background,
    /// for the first takers: the sessions a run needs first are then being
    /// opened while it takes its lock, instead of one after another later.
    /// Threads of their own: a connect can block for its whole timeout, and
    /// must not hold up the shared queues (signals are delivered on one).
    public func warm(_ counts: [String: Int], with connections: ConnectionProvider) {
        for (name, count) in counts {
            for _ in 0..<count {
                Thread {
                    guard !self.isClosed, let session = connections.opened(name) else { return }
                    self.give(session, connection: name)
                }.start()
            }
        }
    }

    /// Closes the idle sessions, keeping the pool open: after a long wait
    /// (for another run's lock, say) they may have been cut off meanwhile,
    /// and checking one could wait out a dead network link.
    public func discardIdle() {
        let sessions = lock.withLock { () -> [[PGConnection]] in
            defer { idle = [:] }
            return Array(idle.values)
        }
        _ = sessions  // released here: each closes as its last reference goes
    }

    private var isClosed: Bool { lock.withLock { closed } }

    /// Closes every idle session; sessions given back later are closed too (a run ended).
    public func close() {
        let sessions = lock.withLock { () -> [[PGConnection]] in
            closed = true
            defer { idle = [:] }
            return Array(idle.values)
        }
        _ = sessions  // released here: each closes as its last reference goes
    }
}
