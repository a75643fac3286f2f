import Foundation
/// A stage output made of rows, read as a stream of batches.
///
/// A relation may be backed by memory or may be a live query that runs again
/// for each scan (a table extract): consumers must not assume that a scan is
/// cheap, and should scan once.
public protocol Relation: Sendable {
    var schema: [Field] { get }
    /// Calls `body` with each batch in order. Throws the producer's errors
    /// (for example a lost source connection, which is transient).
    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws
}

extension Relation {
    public func field(_ name: String) -> Field? { schema.first { $0.name == name } }

    /// Reads the whole relation into memory. Only for inputs known to be small.
    public func materialize(_ context: ScanContext) throws -> Batch {
        var all = Batch(schema: schema)
        try scan(context) { batch in
            for index in all.columns.indices {
                let source = batch.columns[index]
                var target = all.columns[index]
                let before = target.count
                if !source.nulls.isEmpty || !target.nulls.isEmpty {
                    if target.nulls.isEmpty { target.nulls = [Bool](repeating: false, count: before) }
                    target.nulls += source.nulls.isEmpty ? [Bool](repeating: false, count: source.count) : source.nulls
                }
                target.ints += source.ints
                target.doubles += source.doubles
                target.texts += source.texts
                all.columns[index] = target
            }
        }
        return all
    }
}

/// What a relation needs while it is being scanned: where to connect, who is
/// asking (for `application_name`) and whether to stop.
public struct ScanContext: Sendable {
    public let connections: ConnectionProvider
    public let cancellation: Cancellation
    /// The scanning stage's counters: rows read are reported here.
    public let metrics: StageMetrics

    public init(connections: ConnectionProvider, cancellation: Cancellation, metrics: StageMetrics) {
        self.connections = connections
        self.cancellation = cancellation
        self.metrics = metrics
    }
}

/// Rows held in memory.
public struct MaterializedRelation: Relation {
    public let batch: Batch
    public init(_ batch: Batch) { self.batch = batch }
    public var schema: [Field] { batch.schema }
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        try context.cancellation.check()
        context.metrics.read(rows: batch.count)
        try body(batch)
    }
}
