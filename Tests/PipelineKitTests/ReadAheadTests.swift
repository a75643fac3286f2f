import Foundation
import XCTest
@testable import PipelineKit

final class ReadAheadTests: XCTestCase {
    typealias Produced = PrefetchedTests.ProducedRelation

    private func context(metrics: StageMetrics = StageMetrics()) -> ScanContext {
        let cancellation = Cancellation()
        return ScanContext(connections: ConnectionProvider(pipelineName: "unit", stageID: "read-ahead", definitions: [:],
                                                           cancellation: cancellation),
                           cancellation: cancellation, metrics: metrics)
    }

    private static func batch(_ values: [Int64]) -> Batch {
        var batch = Batch(schema: [Field("n", .int)])
        for value in values { batch.append(row: [.int(value)]) }
        return batch
    }

    private func readAhead(_ relation: any Relation) -> ReadAhead {
        let context = context()
        return ReadAhead(relation, connections: context.connections, cancellation: context.cancellation)
    }

    func testTheReadStartsAtOnceAndEveryScanGetsAllRowsCountedAsItsOwn() throws {
        let started = DispatchSemaphore(value: 0)
        let reads = Counter()
        let ahead = readAhead(Produced { emit in
            reads.increment()
            started.signal()
            try emit(Self.batch([1, 2]))
            try emit(Self.batch([3]))
        })
        XCTAssertEqual(started.wait(timeout: .now() + 10), .success, "the read did not start on its own")
        let first = StageMetrics(), second = StageMetrics()
        XCTAssertEqual(try ahead.materialize(context(metrics: first)).columns[0].ints, [1, 2, 3])
        XCTAssertEqual(try ahead.materialize(context(metrics: second)).columns[0].ints, [1, 2, 3])
        XCTAssertEqual([first.rowsIn, second.rowsIn], [3, 3])
        XCTAssertEqual(reads.value, 1, "read once")
    }

    func testAFailedReadIsReadAgainByTheScanSoItsStageMeetsTheErrorWithItsRetries() throws {
        let reads = Counter()
        let ahead = readAhead(Produced { emit in
            reads.increment()
            guard reads.value > 1 else { throw PrefetchedTests.ReadFailed() }
            try emit(Self.batch([7]))
        })
        XCTAssertEqual(try ahead.materialize(context()).columns[0].ints, [7])
        XCTAssertEqual(reads.value, 2)
    }

    func testAScanWaitingForTheReadStopsWhenTheRunIsCancelled() {
        let release = DispatchSemaphore(value: 0)
        let ahead = readAhead(Produced { emit in
            release.wait()
            try emit(Self.batch([1]))
        })
        let scan = context()
        scan.cancellation.cancel(reason: "test")
        XCTAssertThrowsError(try ahead.scan(scan) { _ in })
        release.signal()
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        var value: Int { lock.withLock { count } }
        func increment() { lock.withLock { count += 1 } }
    }
}
