import Foundation

/// Thrown when a run is aborted (SIGINT/SIGTERM or a caller's cancel).
public struct RunAborted: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "aborted: \(reason)" }
}

/// A shared abort switch. Cancelling also interrupts every statement running
/// on a connection opened through this run, so that blocking libpq calls
/// return promptly and their transactions roll back.
public final class Cancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var reason: String?
    private var connections: [ObjectIdentifier: PGConnection] = [:]

    public init() {}

    public var isCancelled: Bool { lock.withLock { reason != nil } }

    public func cancel(reason: String) {
        let open = lock.withLock { () -> [PGConnection] in
            if self.reason == nil { self.reason = reason }
            return Array(connections.values)
        }
        open.forEach { $0.cancel() }
    }

    public func check() throws {
        if let reason = lock.withLock({ self.reason }) { throw RunAborted(reason: reason) }
    }

    func track(_ connection: PGConnection) {
        lock.withLock { connections[ObjectIdentifier(connection)] = connection }
    }

    func untrack(_ connection: PGConnection) {
        _ = lock.withLock { connections.removeValue(forKey: ObjectIdentifier(connection)) }
    }
}
