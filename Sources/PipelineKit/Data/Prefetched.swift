import Foundation

/// A relation read into memory ahead of need, on a thread of its own: the
/// server runs the query while the stage goes on with other work. For small
/// results only (e.g. the rows changed since the last run).
public final class Prefetched: Relation, @unchecked Sendable {
    public let schema: [Field]
    private let condition = NSCondition()
    private var result: Result<[Batch], Error>?

    /// Starts reading `relation` at once. Rows read count in `context`'s metrics.
    public init(_ relation: any Relation, context: ScanContext) {
        schema = relation.schema
        let thread = Thread { [self] in
            var batches: [Batch] = []
            let outcome = Result { () throws -> [Batch] in
                try relation.scan(context) { batches.append($0) }
                return batches
            }
            condition.lock()
            result = outcome
            condition.broadcast()
            condition.unlock()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Waits for the read to end, then hands on its batches, or throws its error.
    public func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        condition.lock()
        while result == nil { condition.wait() }
        let outcome = result!
        condition.unlock()
        for batch in try outcome.get() {
            try context.cancellation.check()
            try body(batch)
        }
    }
}
