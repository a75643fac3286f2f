import Foundation

/// Several relations read at the same time, each on its own thread (and so
/// its own connection), their batches handed on as they arrive. For a few
/// selective queries whose cost is the server's (e.g. rows of some groups
/// fetched through an index), so that they use more than one core.
public struct ParallelUnion: Relation {
    public let parts: [any Relation]

    public init(_ parts: [any Relation]) {
        precondition(!parts.isEmpty, "a union needs at least one part")
        self.parts = parts
    }

    public var schema: [Field] { parts[0].schema }

    /// Each part stops itself when its batches are no longer taken, so the
    /// union has nothing more to interrupt.
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        try Self.pipelined(producers: parts.map { part in { emit in try part.scan(context, emit) } }, interrupt: {}, body)
    }
}
