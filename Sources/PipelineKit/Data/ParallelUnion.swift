import Foundation

/// Several relations read at the same time, each on its own thread (and so
/// its own connection), then handed on one after another. For a few
/// selective queries whose cost is the server's (e.g. rows of some groups
/// fetched through an index), so that they use more than one core.
public struct ParallelUnion: Relation {
    public let parts: [any Relation]

    public init(_ parts: [any Relation]) {
        precondition(!parts.isEmpty, "a union needs at least one part")
        self.parts = parts
    }

    public var schema: [Field] { parts[0].schema }

    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        let lock = NSLock()
        var results = [Result<Batch, Error>?](repeating: nil, count: parts.count)
        let parts = self.parts
        DispatchQueue.concurrentPerform(iterations: parts.count) { index in
            let result = Result { try parts[index].materialize(context) }
            lock.withLock { results[index] = result }
        }
        for result in results { try body(try result!.get()) }
    }
}
