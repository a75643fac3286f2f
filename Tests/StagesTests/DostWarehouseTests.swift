import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// The Dost pipeline end to end: exact to the specification and idempotent.
final class DostWarehouseTests: XCTestCase {
    func testWarehouseEqualsTheSQLReferenceAtTwoAsOfDates() async throws {
        let source = try Dost.sourceDatabase()
        for asOf in ["2020-04-15", "2020-10-15"] {
            let warehouse = try TestDatabase.createDatabase("dost_dw")
            let report = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: asOf))
            XCTAssertEqual(report.status, .succeeded, report.summaryTable)
            try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: asOf)
        }
    }

    func testExcludedRowsAreCountedPerRule() async throws {
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let report = try await Dost.run(try Dost.loadPipeline(source: try Dost.sourceDatabase(), warehouse: warehouse, asOf: "2020-10-15"))
        let excluded = try XCTUnwrap(report.stage("userprogram")).excluded
        let source = try TestDatabase.connect(try Dost.sourceDatabase())
        // Unanswered calls (no start time) stay in the database: the extract reads answered calls only.
        let read = try source.query("""
            SELECT (SELECT count(*) FROM campaign WHERE call_start_time IS NOT NULL) + (SELECT count(*) FROM experience)
            """).int(0, 0)
        XCTAssertEqual(report.stage("userprogram")?.rowsIn, read, "answered calls and experiences")
        XCTAssertNil(excluded["event_null_time"])
        let orphanPairs = try source.query("""
            SELECT count(*) FROM (SELECT DISTINCT user_id, program_id FROM experience e
            WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.user_id)) missing
            """).int(0, 0)
        XCTAssertEqual(excluded["created_on_not_found"], orphanPairs)
        XCTAssertGreaterThan(excluded["event_without_group"] ?? 0, 0)
        XCTAssertGreaterThan(excluded["event_before_start"] ?? 0, 0)
    }

    func testASecondRunChangesNothingAndUnchangedRowsKeepTheirRunID() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let first = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-06-15"))
        XCTAssertEqual(first.status, .succeeded, first.summaryTable)
        XCTAssertGreaterThan(first.stage("userprogram_fact")?.written?.inserted ?? 0, 0)

        // A full refresh recomputes every row; none differs, so none is written.
        let second = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-06-15"), fullRefresh: true)
        for id in ["partnerorg", "programlist", "userprogram_fact", "engagement_metric"] {
            let written = try XCTUnwrap(second.stage(id)?.written, id)
            XCTAssertEqual(written.changed, 0, "\(id) changed on an identical rerun: \(written)")
            XCTAssertGreaterThan(written.unchanged, 0, id)
        }

        // A later as_of closes more windows: those rows change, the others keep the first run's id.
        let third = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-07-15"))
        let updated = try XCTUnwrap(third.stage("userprogram_fact")?.written?.updated)
        XCTAssertGreaterThan(updated, 0)
        let dw = try TestDatabase.connect(warehouse)
        let byRun = try dw.query("SELECT _run_id::text, count(*) FROM dw.userprogram_fact GROUP BY 1").rows
        let counts = Dictionary(uniqueKeysWithValues: byRun.map { ($0[0]!, Int($0[1]!)!) })
        XCTAssertEqual(counts[third.runID.uuidString.lowercased()], updated)
        XCTAssertEqual(counts[first.runID.uuidString.lowercased()], (first.stage("userprogram_fact")?.written?.inserted ?? 0) - updated)
        XCTAssertNil(counts[second.runID.uuidString.lowercased()])
    }

    func testSelectingTheRollupRestoresTheFactTableWithoutRecomputingWhatFeedsIt() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let pipeline = try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15")
        _ = try await Dost.run(pipeline)
        try TestDatabase.connect(warehouse).execute("DELETE FROM dw.engagement_metric")

        let selected = try await Dost.run(pipeline, selecting: ["engagement_metric"])
        XCTAssertEqual(selected.status, .succeeded, selected.summaryTable)
        XCTAssertEqual(selected.stages.map(\.id), ["userprogram_fact", "engagement_metric"], "only the fact is restored")
        XCTAssertEqual(selected.stage("userprogram_fact")?.status, .restored)
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")

        // A lookup that persists nothing cannot be restored, and the message says what to select.
        let aggregate = try await Dost.run(pipeline, selecting: ["userprogram+"])
        XCTAssertEqual(aggregate.status, .failed)
        XCTAssertTrue(aggregate.stage("user_lookup")?.error?.contains("select it too (e.g. --select user_lookup+)") ?? false,
                      aggregate.summaryTable)

        // The tables are now from different runs: the next run rebuilds them all.
        let next = try await Dost.run(pipeline)
        XCTAssertTrue(next.refresh?.hasPrefix("full refresh: the writing stages are at different runs") == true,
                      "refresh: \(next.refresh ?? "nil")")
    }

    func testSelectingAStageOnAnEmptyWarehouseSaysWhichPersistedInputNoRunHasWrittenYet() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let pipeline = try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15")
        let selected = try await Dost.run(pipeline, selecting: ["userprogram_fact"])
        XCTAssertEqual(selected.status, .failed)
        XCTAssertEqual(selected.stage("partnerorg")?.error,
                       "stage 'partnerorg' was not selected, and the table it persists does not exist yet (no run has written it); select it too (e.g. --select partnerorg+)",
                       selected.summaryTable)
    }

    func testEveryConnectionNamesThePipelineAndStageInApplicationName() async throws {
        let source = try Dost.sourceDatabase()
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
        let report = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15"))
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
