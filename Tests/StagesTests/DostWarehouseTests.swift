import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// The shipped Dost pipeline against the independent SQL reference written
/// from the specification (sql/reference_warehouse.sql), on generated data
/// with every edge case.
final class DostWarehouseTests: XCTestCase {
    static let tables: [(name: String, columns: String)] = [
        ("partnerorg", "id, name, provider_number"),
        ("programlist", "program_id, max_seq, lessons, duration_days"),
        ("userprogram_fact", """
            user_id, program_id, created_on, program_start, month1date, month3date, month5date, programenddate,
            partnerorg_id, month1_completed_lessons, month1_completed_minutes, month3_completed_lessons,
            month3_completed_minutes, eop_completed_lessons, eop_completed_minutes
            """),
        ("engagement_metric", """
            partnerorg_id, program_id, cohort_month, window_name, users, users_closed, avg_lessons, avg_minutes,
            high, medium, low, very_low
            """),
    ]

    nonisolated(unsafe) static var source: String?

    /// One sample source for the whole class: generating it is the slow part.
    func sourceDatabase() throws -> String {
        if let source = Self.source { return source }
        let source = try TestDatabase.createDatabase("dost_source")
        try TestDatabase.shell(["scripts/sample-data", "--url", source, "--users", "700", "--seed", "7"])
        Self.source = source
        return source
    }

    func loadPipeline(source: String, warehouse: String, asOf: String, file: String = "pipelines/dost_warehouse.yaml") throws -> PipelineDefinition {
        var environment = ProcessInfo.processInfo.environment
        environment["DOST_SOURCE_URL"] = source
        environment["DOST_WAREHOUSE_URL"] = warehouse
        return try PipelineLoader(registry: .standard).load(
            path: TestDatabase.repositoryRoot.appendingPathComponent(file).path,
            options: LoadOptions(environment: environment, asOf: CivilDate(iso: asOf)))
    }

    func run(_ pipeline: PipelineDefinition, observers: [any RunObserver] = []) async throws -> RunReport {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let executor = try PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 2, logger: logger, observers: observers,
                                                                                    sleep: { _ in }))
        return try await executor.run()
    }

    func assertWarehouseEqualsReference(source: String, warehouse: String, asOf: String,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try TestDatabase.connect(source)
        try reference.execute("SET ref.as_of = '\(asOf)'; SET ref.timezone = 'Asia/Kolkata'; SET ref.min_listen_secs = '30'")
        try reference.execute(String(contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("sql/reference_warehouse.sql"), encoding: .utf8))
        let actual = try TestDatabase.connect(warehouse)
        for table in Self.tables {
            let expected = try TestDatabase.rows(reference, "SELECT \(table.columns) FROM ref.\(table.name)")
            let got = try TestDatabase.rows(actual, "SELECT \(table.columns) FROM dw.\(table.name)")
            XCTAssertFalse(expected.isEmpty, "reference \(table.name) is empty", file: file, line: line)
            XCTAssertEqual(got.count, expected.count, "\(table.name) row count at as_of \(asOf)", file: file, line: line)
            let missing = Set(expected).subtracting(got), extra = Set(got).subtracting(expected)
            XCTAssertTrue(missing.isEmpty && extra.isEmpty,
                          "\(table.name) at as_of \(asOf): \(missing.count) expected rows missing (e.g. \(missing.sorted().prefix(3))), \(extra.count) unexpected (e.g. \(extra.sorted().prefix(3)))",
                          file: file, line: line)
        }
    }

    func testWarehouseEqualsTheSQLReferenceAtTwoAsOfDates() async throws {
        let source = try sourceDatabase()
        for asOf in ["2020-04-15", "2020-10-15"] {
            let warehouse = try TestDatabase.createDatabase("dost_dw")
            let report = try await run(try loadPipeline(source: source, warehouse: warehouse, asOf: asOf))
            XCTAssertEqual(report.status, .succeeded, report.summaryTable)
            try assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: asOf)
        }
    }

    func testExcludedRowsAreCountedPerRule() async throws {
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let report = try await run(try loadPipeline(source: try sourceDatabase(), warehouse: warehouse, asOf: "2020-10-15"))
        let excluded = try XCTUnwrap(report.stage("userprogram")).excluded
        let source = try TestDatabase.connect(try sourceDatabase())
        let nullTimes = try source.query("SELECT count(*) FROM campaign WHERE call_start_time IS NULL").int(0, 0)
        XCTAssertEqual(excluded["event_null_time"], nullTimes)
        let orphanPairs = try source.query("""
            SELECT count(*) FROM (SELECT DISTINCT user_id, program_id FROM experience e
            WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.user_id)) missing
            """).int(0, 0)
        XCTAssertEqual(excluded["created_on_not_found"], orphanPairs)
        XCTAssertGreaterThan(excluded["event_without_group"] ?? 0, 0)
        XCTAssertGreaterThan(excluded["event_before_start"] ?? 0, 0)
    }

    func testASecondRunChangesNothingAndUnchangedRowsKeepTheirRunID() async throws {
        let source = try sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let first = try await run(try loadPipeline(source: source, warehouse: warehouse, asOf: "2020-06-15"))
        XCTAssertEqual(first.status, .succeeded, first.summaryTable)
        XCTAssertGreaterThan(first.stage("userprogram_fact")?.written?.inserted ?? 0, 0)

        let second = try await run(try loadPipeline(source: source, warehouse: warehouse, asOf: "2020-06-15"))
        for id in ["partnerorg", "programlist", "userprogram_fact", "engagement_metric"] {
            let written = try XCTUnwrap(second.stage(id)?.written, id)
            XCTAssertEqual(written.changed, 0, "\(id) changed on an identical rerun: \(written)")
            XCTAssertGreaterThan(written.unchanged, 0, id)
        }

        // A later as_of closes more windows: those rows change, the others keep the first run's id.
        let third = try await run(try loadPipeline(source: source, warehouse: warehouse, asOf: "2020-07-15"))
        let updated = try XCTUnwrap(third.stage("userprogram_fact")?.written?.updated)
        XCTAssertGreaterThan(updated, 0)
        let dw = try TestDatabase.connect(warehouse)
        let byRun = try dw.query("SELECT _run_id::text, count(*) FROM dw.userprogram_fact GROUP BY 1").rows
        let counts = Dictionary(uniqueKeysWithValues: byRun.map { ($0[0]!, Int($0[1]!)!) })
        XCTAssertEqual(counts[third.runID.uuidString.lowercased()], updated)
        XCTAssertEqual(counts[first.runID.uuidString.lowercased()], (first.stage("userprogram_fact")?.written?.inserted ?? 0) - updated)
        XCTAssertNil(counts[second.runID.uuidString.lowercased()])
    }

    func testEveryConnectionNamesThePipelineAndStageInApplicationName() async throws {
        let source = try sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let watcher = try TestDatabase.connect(TestDatabase.conninfo + " dbname=postgres")
        let seen = ApplicationNames()
        let poll = Task.detached {
            while !Task.isCancelled {
                if let names = try? watcher.query("SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE 'runner/%'").rows {
                    seen.add(names.compactMap { $0[0] })
                }
                try? await Task.sleep(nanoseconds: 2_000_000)
            }
        }
        let report = try await run(try loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15"))
        poll.cancel()
        _ = await poll.result
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertTrue(seen.names.contains("runner/dost_warehouse/userprogram"), "seen: \(seen.names.sorted())")
        XCTAssertTrue(seen.names.allSatisfy { $0.hasPrefix("runner/dost_warehouse/") }, "seen: \(seen.names.sorted())")
    }
}

final class ApplicationNames: @unchecked Sendable {
    private let lock = NSLock()
    private var set: Set<String> = []
    func add(_ names: [String]) { lock.withLock { set.formUnion(names) } }
    var names: Set<String> { lock.withLock { set } }
}
