import Foundation

/// A relation whose reading starts at once, on a thread of its own, ahead of
/// its one scan: the server runs the query while the stage goes on with
/// other work. Read-ahead is bounded (`capacity` batches); beyond it the
/// reader waits for the scan, so a large result is streamed, not held.
///
/// It can be scanned once. If it is dropped unscanned or the scan stops
/// early, the reader is told to stop.
public final class Prefetched: Relation, @unchecked Sendable {
    public let schema: [Field]
    private let pipe: BatchPipe
    private let scanned = NSLock()
    private var wasScanned = false

    /// Starts reading `relation`. Rows read count in `context`'s metrics.
    public init(_ relation: any Relation, context: ScanContext, capacity: Int = 8) {
        schema = relation.schema
        pipe = BatchPipe(capacity: max(1, capacity))
        pipe.startProducer { emit in try relation.scan(context, emit) }
    }

    /// Starts reading `relation` to its end, holding every batch until the
    /// scan takes it: for a read that must not stay open, and keep its
    /// session's locks, until its consumer gets to it. Memory grows with the rows.
    public static func whole(_ relation: any Relation, context: ScanContext) -> Prefetched {
        Prefetched(relation, context: context, capacity: .max)
    }

    deinit { pipe.abandon() }

    /// Hands on the batches as they come, or rethrows the reader's error.
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        let again = scanned.withLock { () -> Bool in
            defer { wasScanned = true }
            return wasScanned
        }
        // Its rows were handed on once and are gone: a second scan must not look empty.
        guard !again else { throw StageFailure.config("internal error: a prefetched relation can be scanned only once") }
        do {
            while let batch = try pipe.take() {
                try context.cancellation.check()
                try body(batch)
            }
        } catch {
            pipe.abandon()
            throw error
        }
    }
}
