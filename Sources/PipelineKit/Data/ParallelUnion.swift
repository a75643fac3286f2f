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
        let results = Results(count: parts.count)
        let parts = self.parts
        DispatchQueue.concurrentPerform(iterations: parts.count) { index in
            results.set(index, Result { try parts[index].materialize(context) })
        }
        for index in parts.indices { try body(try results.get(index)) }
    }

    private final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Result<Batch, Error>?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ value: Result<Batch, Error>) { lock.withLock { values[index] = value } }
        func get(_ index: Int) throws -> Batch { try lock.withLock { values[index] }!.get() }
    }
}
