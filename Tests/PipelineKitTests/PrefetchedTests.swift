import Foundation
import XCTest
@testable import PipelineKit

final class PrefetchedTests: XCTestCase {
    /// Rows produced by a closure: a stand-in for a query.
    struct ProducedRelation: Relation {
        let schema = [Field("n", .int)]
        let produce: @Sendable (_ emit: (Batch) throws -> Void) throws -> Void

        func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws { try produce(body) }
    }

    struct ReadFailed: Error, Equatable {}

    private func context() -> ScanContext {
        let cancellation = Cancellation()
        return ScanContext(connections: ConnectionProvider(pipelineName: "unit", stageID: "prefetch", definitions: [:],
                                                           cancellation: cancellation),
                           cancellation: cancellation, metrics: StageMetrics())
    }

    private static func batch(_ values: [Int64]) -> Batch {
        var batch = Batch(schema: [Field("n", .int)])
        for value in values { batch.append(row: [.int(value)]) }
        return batch
    }

    func testTheRowsReadAheadAreHandedOnInOrder() throws {
        let relation = ProducedRelation { emit in
            try emit(Self.batch([1, 2]))
            try emit(Self.batch([3]))
        }
        let prefetched = Prefetched(relation, context: context())
        XCTAssertEqual(try prefetched.materialize(context()).columns[0].ints, [1, 2, 3])
        XCTAssertEqual(prefetched.schema, relation.schema)
    }

    func testReadingStartsBeforeAnyoneScans() {
        let started = DispatchSemaphore(value: 0)
        let relation = ProducedRelation { emit in
            started.signal()
            try emit(Self.batch([1]))
        }
        let prefetched = Prefetched(relation, context: context())
        XCTAssertEqual(started.wait(timeout: .now() + 10), .success, "the read did not start on its own")
        XCTAssertEqual(try prefetched.materialize(context()).count, 1)
    }

    func testAFailedReadIsRethrownByTheScanWithNoPartialRows() {
        let relation = ProducedRelation { emit in
            try emit(Self.batch([1]))
            throw ReadFailed()
        }
        let prefetched = Prefetched(relation, context: context())
        var seen = 0
        XCTAssertThrowsError(try prefetched.scan(context()) { seen += $0.count }) { error in
            XCTAssertEqual(error as? ReadFailed, ReadFailed())
        }
        XCTAssertEqual(seen, 0)
    }
}
