import Foundation

/// A small relation read once, from the moment it is made, to its end on a
/// thread of its own, and kept: an extract's changes in an incremental run,
/// read while the stages before their consumers still run instead of when
/// a consumer gets to them. Any number of scans hand on the kept batches,
/// counting them as read by the scanning stage.
///
/// A scan waits for the read. If the read failed, the scan reads the
/// relation itself, so the error reaches the consuming stage, which retries
/// it as its own.
public final class ReadAhead: Relation, @unchecked Sendable {
    public let schema: [Field]
    private let relation: any Relation
    private let condition = NSCondition()
    private var result: Result<[Batch], Error>?

    /// Starts reading `relation`; rows read ahead count in no stage's metrics until scanned.
    public init(_ relation: any Relation, connections: ConnectionProvider, cancellation: Cancellation) {
        schema = relation.schema
        self.relation = relation
        let context = ScanContext(connections: connections, cancellation: cancellation, metrics: StageMetrics())
        Thread.detachNewThread { [self] in
            var batches: [Batch] = []
            let outcome = Result { () throws -> [Batch] in
                try relation.scan(context) { batches.append($0) }
                return batches
            }
            condition.withLock {
                result = outcome
                condition.broadcast()
            }
        }
    }

    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        let outcome = try condition.withLock { () throws -> Result<[Batch], Error> in
            while result == nil {
                try context.cancellation.check()
                _ = condition.wait(until: Date().addingTimeInterval(0.1))
            }
            return result!
        }
        guard case .success(let batches) = outcome else { return try relation.scan(context, body) }
        for batch in batches {
            try context.cancellation.check()
            context.metrics.read(rows: batch.count)
            try body(batch)
        }
    }
}
