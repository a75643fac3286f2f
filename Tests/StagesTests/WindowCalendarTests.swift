import Foundation
import PipelineKit
import Stages
import XCTest

/// An incremental run of a windowAggregate whose output a factUpsert keeps
/// finds the groups to recompute from the start dates and window ends that
/// table holds, not by reading every anchor row again; and it still equals a
/// full refresh, also where only an anchor or lookup row can tell.
final class WindowCalendarTests: XCTestCase {
    /// A full refresh of `source` into a new warehouse as of 2020-10-01, `between`, then a run as
    /// of `asOf` that must succeed incrementally, with its log.
    private func refreshIncrementally(_ source: String, asOf: String, between: (String) throws -> Void = { _ in },
                                      file: StaticString = #filePath, line: UInt = #line) async throws
        -> (warehouse: String, report: RunReport, log: CapturedLog) {
        let warehouse = try TestDatabase.createDatabase("calendar_dw")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01", file: file, line: line)
        try between(warehouse)
        let log = CapturedLog()
        let report = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: asOf), capturing: log)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable, file: file, line: line)
        XCTAssertTrue(report.refresh?.hasPrefix("incremental") == true, report.refresh ?? "nil", file: file, line: line)
        return (warehouse, report, log)
    }

    func testAnIncrementalRunTakesTheSchedulesFromTheLastRunsOutputInsteadOfReadingEveryAnchor() async throws {
        let source = try Incremental.sharedSource()
        let (warehouse, _, log) = try await refreshIncrementally(source, asOf: "2020-10-15")
        XCTAssertTrue(log.messages.contains("recomputing changed groups [stage=userprogram][schedules=the last run's output]"),
                      "\(log.messages.filter { $0.contains("recomputing") })")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    /// The group is in no calendar (the last run could not form it) and gets
    /// no new anchor row: only the lookup's new key can say it changed.
    func testAUserArrivingAfterTheirExperiencesFormsTheirGroupsInAnIncrementalRun() async throws {
        let source = try Incremental.privateSource()
        let connection = try TestDatabase.connect(source)
        let user = try XCTUnwrap(connection.query("""
            SELECT user_id FROM experience WHERE created_on < '2020-08-01' AND user_id IN (SELECT id FROM users)
            GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1
            """).int(0, 0))
        try connection.execute("CREATE TABLE held_user AS SELECT * FROM users WHERE id = \(user); DELETE FROM users WHERE id = \(user)")
        let facts = "SELECT count(*) FROM dw.userprogram_fact WHERE user_id = \(user)"
        let (warehouse, report, log) = try await refreshIncrementally(source, asOf: "2020-10-02") { warehouse in
            XCTAssertEqual(try TestDatabase.connect(warehouse).query(facts).int(0, 0), 0, "no row while the user is missing")
            try connection.execute("INSERT INTO users SELECT * FROM held_user")
        }
        XCTAssertTrue(log.messages.contains("recomputing changed groups [stage=userprogram][schedules=the last run's output]"),
                      "\(log.messages.filter { $0.contains("recomputing") })")
        XCTAssertGreaterThan(try TestDatabase.connect(warehouse).query(facts).int(0, 0) ?? 0, 0, report.summaryTable)
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-02")
    }

    func testWithoutTheWindowEndsInTheFactTableTheSchedulesAreWorkedOutFromEveryAnchorAndTheRunStillEqualsAFullRefresh() async throws {
        let source = try Incremental.sharedSource()
        let shipped = try String(contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("pipelines/dost_warehouse.yaml"), encoding: .utf8)
        // eop ends on programenddate: a table without it cannot say when eop closes.
        let withoutEnd = shipped.replacingOccurrences(of: "        programenddate: date\n", with: "")
        XCTAssertNotEqual(withoutEnd, shipped)
        let warehouse = try TestDatabase.createDatabase("calendar_dw")
        let first = try await Dost.run(try Dost.loadPipeline(yaml: withoutEnd, source: source, warehouse: warehouse, asOf: "2020-10-01"))
        XCTAssertEqual(first.status, .succeeded, first.summaryTable)

        let log = CapturedLog()
        let second = try await Dost.run(try Dost.loadPipeline(yaml: withoutEnd, source: source, warehouse: warehouse, asOf: "2020-10-15"),
                                        capturing: log)
        XCTAssertEqual(second.status, .succeeded, second.summaryTable)
        XCTAssertTrue(second.refresh?.hasPrefix("incremental") == true, second.refresh ?? "nil")
        XCTAssertTrue(log.messages.contains("recomputing changed groups [stage=userprogram][schedules=every anchor row]"),
                      "\(log.messages.filter { $0.contains("recomputing") })")

        let full = try TestDatabase.createDatabase("calendar_full")
        let rebuilt = try await Dost.run(try Dost.loadPipeline(yaml: withoutEnd, source: source, warehouse: full, asOf: "2020-10-15"))
        XCTAssertEqual(rebuilt.status, .succeeded, rebuilt.summaryTable)
        try Incremental.assertWarehousesEqual(incremental: warehouse, full: full)
    }

    // MARK: - The rollup's stored totals

    func testTheRollupAdjustsTheStoredTotalsOfTheChangedCellsByTheReplacedFactRows() async throws {
        let source = try Incremental.sharedSource()
        let (warehouse, _, log) = try await refreshIncrementally(source, asOf: "2020-10-15")
        XCTAssertTrue(log.messages.contains("rolled up changed cells [stage=engagement_metric][from=stored totals adjusted by the replaced rows]"),
                      "\(log.messages.filter { $0.contains("rolled up") })")
        // Totals included: every column but the bookkeeping ones equals a full refresh's.
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testAMetricTableWrittenBeforeTotalsWereKeptGetsTheirColumnsAndItsChangedCellsRolledUpFromTheirRows() async throws {
        let source = try Incremental.sharedSource()
        let (warehouse, report, log) = try await refreshIncrementally(source, asOf: "2020-10-15") { warehouse in
            try TestDatabase.connect(warehouse).execute("""
                ALTER TABLE dw.engagement_metric DROP COLUMN _acc_rows, DROP COLUMN _acc_avg_lessons_n,
                  DROP COLUMN _acc_avg_lessons_sum, DROP COLUMN _acc_avg_minutes_n, DROP COLUMN _acc_avg_minutes_sum
                """)
        }
        XCTAssertTrue(log.messages.contains("rolled up changed cells [stage=engagement_metric][from=their rows read again]"),
                      "\(log.messages.filter { $0.contains("rolled up") })")

        let full = try await Incremental.fullWarehouse(source: source, asOf: "2020-10-15")
        let visible = Dost.tables.first { $0.name == "engagement_metric" }!.columns
        let select = "SELECT \(visible) FROM dw.engagement_metric"
        XCTAssertEqual(Set(try TestDatabase.rows(TestDatabase.connect(warehouse), select)),
                       Set(try TestDatabase.rows(TestDatabase.connect(full), select)))
        let changedWithTotals = try TestDatabase.connect(warehouse).query("""
            SELECT count(*) FROM dw.engagement_metric WHERE _run_id = $1 AND _acc_rows = users
            """, [report.runID.uuidString.lowercased()]).int(0, 0) ?? 0
        XCTAssertGreaterThan(changedWithTotals, 0, "the rows this run wrote carry their totals")
    }

    // MARK: - Persisted lookups

    func testAPersistedLookupOfUnchangedReferenceDataIsNotWrittenAgainButItsStateMovesOn() async throws {
        let source = try Incremental.sharedSource()
        let (warehouse, second, log) = try await refreshIncrementally(source, asOf: "2020-10-15")
        for stage in ["partnerorg", "programlist"] {
            XCTAssertTrue(log.messages.contains("input unchanged since the last run; its table is not written again [stage=\(stage)]"),
                          "\(log.messages.filter { $0.contains("unchanged") })")
            XCTAssertEqual(second.stage(stage)?.written?.changed, 0, second.summaryTable)
            XCTAssertGreaterThan(second.stage(stage)?.written?.unchanged ?? 0, 0, second.summaryTable)
        }
        // Every writer's state is at this run: the next run is incremental again.
        let third = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-20")
        XCTAssertTrue(third.refresh?.contains(String(second.runID.uuidString.lowercased().prefix(8))) == true, third.refresh ?? "nil")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-20")
    }
}
