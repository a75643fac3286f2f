import Foundation
import Logging
@testable import PipelineKit
import XCTest

/// One run per pipeline, even when the server ends the session holding a run's lock.
final class RunLockTests: XCTestCase {
    private final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var raised = false
        func raise() { lock.withLock { raised = true } }
        var isRaised: Bool { lock.withLock { raised } }
    }

    private static func takeLock(_ pipeline: PipelineDefinition) async throws -> RunLock {
        let lock = try await RunLock.acquire(pipeline: pipeline, runID: UUID(), wait: false, cancellation: Cancellation(),
                                             logger: Logger(label: "test"))
        return try XCTUnwrap(lock)
    }

    func testARunTakingALostLockWaitsForTheWritesThatFoundItHeldAndLaterOnesFail() async throws {
        let warehouse = try TestDatabase.createDatabase("run_lock")
        let pipeline = try Dost.loadPipeline(yaml: """
            pipeline: locked
            connections: {warehouse: {url: "${DOST_WAREHOUSE_URL}"}}
            defaults: {warehouse: warehouse}
            stages:
              - {id: one, type: pgExtract, config: {connection: warehouse, query: SELECT 1 AS n, columns: {n: int}}}
            """, source: warehouse, warehouse: warehouse)
        let first = try await Self.takeLock(pipeline)
        let write = try TestDatabase.connect(warehouse)
        try write.execute("BEGIN")
        try first.writes.verify(write)

        // An administrator ends the first run's lock session while its write is open.
        let admin = try TestDatabase.connect(warehouse)
        try admin.query("""
            SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
            WHERE application_name LIKE 'runner/locked/lock/%' AND datname = current_database()
            """)
        let taken = Flag()
        let second = Task.detached { [pipeline, taken] () async throws -> RunLock in
            let lock = try await RunLockTests.takeLock(pipeline)
            taken.raise()
            return lock
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertFalse(taken.isRaised, "the second run went ahead while a write of the first was open")
        try write.execute("COMMIT")
        let secondLock = try await second.value
        XCTAssertTrue(taken.isRaised)

        try write.execute("BEGIN")
        XCTAssertThrowsError(try first.writes.verify(write)) { error in
            XCTAssertTrue(error is RunLockLost, "\(error)")
        }
        try write.execute("ROLLBACK")
        try write.execute("BEGIN")
        XCTAssertNoThrow(try secondLock.writes.verify(write))
        try write.execute("COMMIT")
        secondLock.release()
    }
}
