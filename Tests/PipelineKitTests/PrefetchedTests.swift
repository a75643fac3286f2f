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

    func testAFailedReadIsRethrownByTheScan() {
        let relation = ProducedRelation { emit in
            try emit(Self.batch([1]))
            throw ReadFailed()
        }
        let prefetched = Prefetched(relation, context: context())
        XCTAssertThrowsError(try prefetched.scan(context()) { _ in }) { error in
            XCTAssertEqual(error as? ReadFailed, ReadFailed())
        }
    }

    func testReadingAheadStopsAtItsCapacityUntilTheScanTakesTheRows() throws {
        let emitted = Counter()
        let relation = ProducedRelation { emit in
            for value in 0..<10 {
                try emit(Self.batch([Int64(value)]))
                emitted.increment()
            }
        }
        let prefetched = Prefetched(relation, context: context(), capacity: 2)
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertLessThanOrEqual(emitted.value, 3, "read ahead past its capacity")
        XCTAssertEqual(try prefetched.materialize(context()).columns[0].ints, Array(0..<10))
    }

    func testAReaderWhoseRowsAreNeverScannedIsToldToStop() {
        let stopped = DispatchSemaphore(value: 0)
        let relation = ProducedRelation { emit in
            defer { stopped.signal() }
            while true { try emit(Self.batch([1])) }
        }
        var prefetched: Prefetched? = Prefetched(relation, context: context(), capacity: 1)
        XCTAssertNotNil(prefetched)
        prefetched = nil
        XCTAssertEqual(stopped.wait(timeout: .now() + 10), .success, "the reader kept going")
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func increment() { lock.withLock { count += 1 } }
        var value: Int { lock.withLock { count } }
    }
}
