import Foundation

/// Thrown when a run is aborted (SIGINT/SIGTERM or a caller's cancel).
public struct RunAborted: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "aborted: \(reason)" }
}

/// A shared abort switch. Cancelling also interrupts every statement running
/// on a connection opened through this run, so that blocking libpq calls
/// return promptly and their transactions roll back, and it cuts short the
/// waits between retries.
public final class Cancellation: @unchecked Sendable {
    private let condition = NSCondition()
    private var reason: String?
    private var connections: [ObjectIdentifier: PGConnection] = [:]

    public init() {}

    public var isCancelled: Bool { condition.withLock { reason != nil } }

    /// The error a stage stopped by this cancellation ends with; nil while the run goes on.
    public var abort: RunAborted? { condition.withLock { reason.map { RunAborted(reason: $0) } } }

    public func cancel(reason: String) {
        let open = condition.withLock { () -> [PGConnection] in
            if self.reason == nil { self.reason = reason }
            condition.broadcast()
            return Array(connections.values)
        }
        open.forEach { $0.cancel() }
    }

    public func check() throws {
        if let abort { throw abort }
    }

    /// Blocks the calling thread for `seconds`, or less if the run is cancelled meanwhile.
    func wait(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        condition.withLock {
            while reason == nil && condition.wait(until: deadline) {}
        }
    }

    /// Returns once the run is cancelled, or when the calling task is.
    func cancelled() async {
        // Polled rather than signalled: it only shortens a retry's backoff,
        // and a task that is itself cancelled must not stay parked on a waiter list.
        while !isCancelled && !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    func track(_ connection: PGConnection) {
        condition.withLock { connections[ObjectIdentifier(connection)] = connection }
    }

    func untrack(_ connection: PGConnection) {
        _ = condition.withLock { connections.removeValue(forKey: ObjectIdentifier(connection)) }
    }
}
