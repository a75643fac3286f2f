import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// Incremental refresh of the shipped Dost pipeline: whatever arrives in the
/// source between two runs, an incremental run leaves the warehouse exactly as
/// a full refresh of the same source at the same as_of would.
final class IncrementalRefreshTests: XCTestCase {
    // MARK: - Specifications

    func testAnIncrementalRunAfterNewUsersExperiencesAndLateCallsEqualsAFullRefresh() async throws {
        let source = try Incremental.privateSource()
        try Incremental.holdBack(source)
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        let first = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
        XCTAssertEqual(first.refresh, "full refresh: no earlier run has committed refresh state (first run)")

        try Incremental.arrive(source)
        let second = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-20")
        XCTAssertGreaterThan(second.stage("userprogram_fact")?.written?.inserted ?? 0, 0,
                             "the arriving users' programs are new fact rows\n\(second.summaryTable)")

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-20")
    }

    func testACallCommittedByATransactionOpenDuringTheLastRunIsNotMissed() async throws {
        try await assertACallCommittedLateIsCounted(inSavepoint: false)
    }

    /// A snapshot lists top-level transactions only; a row written in a
    /// savepoint carries the subtransaction's id, which must not pass as seen.
    func testACallInsertedInASavepointOfATransactionOpenDuringTheLastRunIsNotMissed() async throws {
        try await assertACallCommittedLateIsCounted(inSavepoint: true)
    }

    /// A state saved without key gaps (by an earlier version, or with too
    /// many gaps to keep): the look-back is re-checked by transaction id.
    func testACallCommittedLateIsNotMissedAfterARunThatKeptNoKeyGaps() async throws {
        try await assertACallCommittedLateIsCounted(inSavepoint: false, keyGapsKept: false)
    }

    private func assertACallCommittedLateIsCounted(inSavepoint: Bool, keyGapsKept: Bool = true) async throws {
        let source = try Incremental.privateSource()
        try Incremental.holdBack(source)
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")

        // A held-back call that completes a lesson nobody else completed for
        // its (user, program), well inside month 1, so its window is closed
        // at 2020-10-05 and the call changes the fact row.
        let src = try TestDatabase.connect(source)
        let candidates = try src.query("""
            SELECT c.id, c.user_id, c.program_id FROM hb_calls c
            WHERE c.listen_secs >= 30 AND c.attempted_timestamp < '2020-09-01'
              AND c.call_start_time IS NOT NULL AND c.programseq_id IS NOT NULL
              AND EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id AND u.created_on IS NOT NULL)
              AND c.call_start_time >= (SELECT min(e.created_on) FROM experience e
                                        WHERE e.user_id = c.user_id AND e.program_id = c.program_id) + interval '2 days'
              AND c.call_start_time < (SELECT min(e.created_on) FROM experience e
                                       WHERE e.user_id = c.user_id AND e.program_id = c.program_id) + interval '25 days'
              AND NOT EXISTS (SELECT 1 FROM campaign o WHERE o.user_id = c.user_id AND o.program_id = c.program_id
                              AND o.programseq_id = c.programseq_id AND o.listen_secs >= 30)
            ORDER BY c.id LIMIT 2
            """).rows
        XCTAssertEqual(candidates.count, 2, "the sample must hold back two suitable old calls")
        guard candidates.count == 2, let heldID = candidates[0][0], let user = candidates[0][1], let program = candidates[0][2],
              let otherID = candidates[1][0] else { return }
        let maxID = try XCTUnwrap(try src.query("SELECT max(id) FROM campaign").int(0, 0))
        func insert(_ heldCall: String, as newID: Int) -> String {
            """
            INSERT INTO campaign (id, experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                                  call_start_time, call_end_time, programseq_id)
            SELECT \(newID), experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                   call_start_time, call_end_time, programseq_id
            FROM hb_calls WHERE id = \(heldCall)
            """
        }

        // A transaction inserts the call with a lower id and stays open; a
        // later one inserts another call with a higher id and commits.
        let open = try TestDatabase.connect(source)
        try open.execute("BEGIN")
        if inSavepoint { try open.execute("SAVEPOINT nested") }
        try open.execute(insert(heldID, as: maxID + 1))
        if inSavepoint { try open.execute("RELEASE SAVEPOINT nested") }
        let other = try TestDatabase.connect(source)
        try other.execute(insert(otherID, as: maxID + 10))

        _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-05")
        let dw = try TestDatabase.connect(warehouse)
        if keyGapsKept {
            // Stages that committed before the search ended saved none.
            let stored = try XCTUnwrap(try dw.query("""
                SELECT key_gaps->'extracts'->>'calls' FROM pipelinekit.refresh_state WHERE key_gaps->'extracts' ? 'calls' LIMIT 1
                """).string(0, 0))
            let gaps = try JSONDecoder().decode(KeyGaps.self, from: Data(stored.utf8))
            XCTAssertTrue(gaps.ranges.contains { $0.contains(Int64(maxID + 1)) }, "the open transaction's key is a gap: \(stored)")
        } else {
            try dw.execute("UPDATE pipelinekit.refresh_state SET key_gaps = NULL")
        }
        let factSQL = "SELECT \(Dost.tables[2].columns) FROM dw.userprogram_fact WHERE user_id = \(user) AND program_id = \(program)"
        let factWithoutTheCall = try TestDatabase.rows(TestDatabase.connect(warehouse), factSQL)

        try open.execute("COMMIT")
        _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-05")

        let full = try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-05")
        // The late call matters: without it the fact row would differ from a full refresh.
        let factWithTheCall = try TestDatabase.rows(TestDatabase.connect(full), factSQL)
        XCTAssertEqual(factWithTheCall.count, 1, "fact row of (\(user), \(program))")
        XCTAssertNotEqual(factWithoutTheCall, factWithTheCall,
                          "call \(heldID) of (\(user), \(program)) does not change its fact row, so this test proves nothing")
    }

    func testWindowsClosingBetweenRunsWithoutNewDataAreRecomputed() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        let first = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")

        let later = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-15")
        let recomputed = later.stage("userprogram")?.rowsOut ?? 0
        XCTAssertGreaterThan(recomputed, 0, later.summaryTable)
        XCTAssertLessThan(recomputed, (first.stage("userprogram")?.rowsOut ?? 0) / 4, "only the pairs whose windows closed")
        XCTAssertEqual(later.stage("userprogram_fact")?.written?.updated, recomputed, later.summaryTable)

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    /// The changed pairs' calls are read again only as far as as_of, where
    /// every closed window has ended. In a zone behind UTC the day before
    /// as_of runs on into as_of's UTC date, and its calls still count.
    func testCallsLateOnTheDayBeforeAsOfCountInAZoneBehindUTC() async throws {
        let source = try Incremental.privateSource()
        let behind = [(name: "timezone", value: "Pacific/Honolulu")]
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01", variables: behind)

        // A pair whose month 1 ends on as_of gets a call at 23:00 the evening
        // before, Honolulu time: 09:00 UTC on as_of's date.
        let before = try TestDatabase.rows(TestDatabase.connect(warehouse), "SELECT user_id FROM dw.userprogram_fact")
        let pair = try TestDatabase.connect(warehouse).query("""
            SELECT user_id, program_id FROM dw.userprogram_fact WHERE month1date = '2020-10-15' ORDER BY 1, 2
            """).rows
        let src = try TestDatabase.connect(source)
        guard let user = pair.first?[0], let program = pair.first?[1] else { return XCTFail("no pair's month 1 ends on 2020-10-15") }
        let lesson = try XCTUnwrap(try src.query("""
            SELECT s.id FROM programseq s WHERE s.program_id = \(program) AND NOT EXISTS (
                SELECT 1 FROM campaign c WHERE c.user_id = \(user) AND c.program_id = \(program) AND c.programseq_id = s.id)
            ORDER BY s.id LIMIT 1
            """).string(0, 0), "a lesson pair (\(user), \(program)) never heard")
        try src.execute("""
            INSERT INTO campaign (id, experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                                  call_start_time, call_end_time, programseq_id)
            SELECT (SELECT max(id) + 1 FROM campaign), e.id, e.program_id, e.user_id, 'completed', 120,
                   '2020-10-14 23:00:00-10', '2020-10-14 23:00:00-10', '2020-10-14 23:02:00-10', \(lesson)
            FROM experience e WHERE e.user_id = \(user) AND e.program_id = \(program) ORDER BY e.id LIMIT 1
            """)

        let second = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-15", variables: behind)
        XCTAssertLessThan(second.stage("userprogram")?.rowsOut ?? .max, before.count / 4, "the changed pairs only, read by key")

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15", variables: behind)
        let lessons = try TestDatabase.connect(warehouse).query("""
            SELECT month1_completed_lessons FROM dw.userprogram_fact WHERE user_id = \(user) AND program_id = \(program)
            """).int(0, 0)
        XCTAssertGreaterThan(lessons ?? 0, 0, "the evening call completes a lesson of (\(user), \(program))")
    }

    /// Without a unique index on the users' id, an old id can gain a second
    /// row the tracking key does not show (here one below a look-back of one
    /// key). The users lookup is then read whole, not by key, and the
    /// incremental run fails on the repeated user as a full refresh does,
    /// writing nothing.
    func testAUserRowRepeatingAnOldIdFailsTheIncrementalRunAsItFailsAFullRefresh() async throws {
        let source = try Incremental.privateSource()
        let src = try TestDatabase.connect(source)
        try src.execute("ALTER TABLE users DROP CONSTRAINT users_pkey CASCADE")
        let shipped = try String(contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("pipelines/dost_warehouse.yaml"), encoding: .utf8)
        let tracked = "columns: {id: bigint, created_on: timestamptz}\n      incremental: {tracking_key: id}"
        let yaml = shipped.replacingOccurrences(of: tracked, with: tracked.replacingOccurrences(of: "id}", with: "id, lookback: 1}"))
        XCTAssertNotEqual(yaml, shipped)
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        let first = try await Dost.run(try Dost.loadPipeline(yaml: yaml, source: source, warehouse: warehouse, asOf: "2020-10-01"))
        XCTAssertEqual(first.status, .succeeded, first.summaryTable)
        let factSQL = "SELECT \(Dost.tables[2].columns) FROM dw.userprogram_fact"
        let before = try TestDatabase.rows(TestDatabase.connect(warehouse), factSQL)

        let user = try XCTUnwrap(try src.query("SELECT min(id) FROM users").string(0, 0))
        try src.execute("INSERT INTO users SELECT * FROM users WHERE id = \(user)")
        let incremental = try await Dost.run(try Dost.loadPipeline(yaml: yaml, source: source, warehouse: warehouse, asOf: "2020-10-15"))
        let full = try await Dost.run(try Dost.loadPipeline(yaml: yaml, source: source, warehouse: try TestDatabase.createDatabase("dost_dw_full"),
                                                            asOf: "2020-10-15"))

        XCTAssertTrue(incremental.refresh?.hasPrefix("incremental") == true, "refresh: \(incremental.refresh ?? "nil")")
        for report in [incremental, full] {
            XCTAssertEqual(report.status, .failed, report.summaryTable)
            XCTAssertEqual(report.stage("user_lookup")?.status, .failed, report.summaryTable)
            XCTAssertTrue(report.summaryTable.contains("2 rows of 'users' share the key \(user)"), report.summaryTable)
        }
        XCTAssertEqual(try TestDatabase.rows(TestDatabase.connect(warehouse), factSQL), before, "the failed run wrote nothing")
    }

    func testAfterALongGapMostPairsChangedSoAllAreRecomputedInOneRead() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-03-01")

        let later = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-12-15")
        let full = try await Incremental.fullWarehouse(source: source, asOf: "2020-12-15")
        let pairs = try XCTUnwrap(TestDatabase.connect(full).query("SELECT count(*) FROM dw.userprogram_fact").int(0, 0))
        XCTAssertEqual(later.stage("userprogram")?.rowsOut, pairs, "more than a quarter changed: every pair is recomputed")
        try Incremental.assertWarehousesEqual(incremental: warehouse, full: full)
    }

    func testARunWithNoNewDataChangesNothing() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")

        let again = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-15")
        let written = try XCTUnwrap(again.stage("userprogram_fact")?.written, again.summaryTable)
        XCTAssertEqual(written.changed, 0, "userprogram_fact: \(written)")
        XCTAssertEqual(again.stage("userprogram")?.rowsOut, 0, again.summaryTable)

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testAnEarlierAsOfIsRefusedUnlessFullRefresh() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")

        do {
            let report = try await Incremental.run(source: source, warehouse: warehouse, asOf: "2020-10-01")
            XCTFail("a run at an earlier as_of was not refused: \(report.refresh ?? "nil")\n\(report.summaryTable)")
        } catch let refused as RefreshRefused {
            XCTAssertTrue(refused.description.contains("--full-refresh"), refused.description)
        }

        let rebuilt = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01", fullRefresh: true)
        XCTAssertEqual(rebuilt.refresh, "full refresh: --full-refresh was given")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-01")
    }

    func testChangingAVariableForcesAFullRefreshNamingIt() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")

        let stricter = [(name: "min_listen_secs", value: "45")]
        let changed = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15", variables: stricter)
        XCTAssertTrue(changed.refresh?.hasPrefix("full refresh: variable 'min_listen_secs' changed") == true,
                      "refresh: \(changed.refresh ?? "nil")")
        XCTAssertGreaterThan(changed.stage("userprogram_fact")?.written?.updated ?? 0, 0, changed.summaryTable)

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15", variables: stricter)
    }

    /// Finds a pair alone in its metric cell (partner, program, cohort month)
    /// and gives it an earlier experience through another partner's number,
    /// which moves it to another cell. Returns the cell it will leave.
    /// A full refresh, then a source change that moves a pair alone in its cell to another: the cell it left.
    private func fullRunThenAPairMovedAloneOutOfItsCell() async throws
        -> (source: String, warehouse: String, left: (partner: String, program: String, cohort: String)) {
        let source = try Incremental.privateSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")
        return (source, warehouse, try movePairAloneInItsCell(source: source, warehouse: warehouse))
    }

    private func movePairAloneInItsCell(source: String, warehouse: String) throws -> (partner: String, program: String, cohort: String) {
        let alone = try TestDatabase.connect(warehouse).query("""
            SELECT f.user_id, f.program_id, f.partnerorg_id, m.cohort_month::text, f.program_start::text
            FROM dw.userprogram_fact f JOIN dw.engagement_metric m
              ON m.partnerorg_id = f.partnerorg_id AND m.program_id = f.program_id
             AND m.cohort_month = date_trunc('month', f.start_date)::date AND m.window_name = 'month1'
            WHERE m.users = 1 ORDER BY f.user_id, f.program_id LIMIT 1
            """).rows
        let pair = try XCTUnwrap(alone.first.flatMap { row in row.contains(nil) ? nil : row.compactMap { $0 } },
                                 "the sample has no metric cell with one pair")
        let (user, program, partner, cohort, start) = (pair[0], pair[1], pair[2], pair[3], pair[4])
        let otherNumber = partner == "1" ? "2261234501" : "8047100037"
        try TestDatabase.connect(source).execute("""
            INSERT INTO experience (id, user_id, program_id, provider_number, phone, created_on)
            SELECT max(id) + 1, \(user), \(program), '\(otherNumber)', NULL, '\(start)'::timestamptz - interval '40 days' FROM experience
            """)
        return (partner, program, cohort)
    }

    private func metricRows(_ warehouse: String, inCell cell: (partner: String, program: String, cohort: String)) throws -> Int? {
        try TestDatabase.connect(warehouse).query("""
            SELECT count(*) FROM dw.engagement_metric WHERE partnerorg_id = \(cell.partner) AND program_id = \(cell.program)
              AND cohort_month = '\(cell.cohort)'::date
            """).int(0, 0)
    }

    /// A run whose fact write commits and whose metric write fails: new and
    /// updated metric rows violate a constraint, dropped again afterwards.
    private func runWhoseRollupFails(source: String, warehouse: String, asOf: String, fullRefresh: Bool = false) async throws {
        let dw = try TestDatabase.connect(warehouse)
        try dw.execute("ALTER TABLE dw.engagement_metric ADD CONSTRAINT no_new CHECK (users < 0) NOT VALID")
        let failed = try await Incremental.run(source: source, warehouse: warehouse, asOf: asOf, fullRefresh: fullRefresh)
        XCTAssertEqual(failed.stage("userprogram_fact")?.status, .succeeded, failed.summaryTable)
        XCTAssertEqual(failed.stage("engagement_metric")?.status, .failed, failed.summaryTable)
        try dw.execute("ALTER TABLE dw.engagement_metric DROP CONSTRAINT no_new")
    }

    func testAPairMovedToAnotherCellLeavesNoEmptyMetricRowBehind() async throws {
        let (source, warehouse, left) = try await fullRunThenAPairMovedAloneOutOfItsCell()

        _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-15")
        XCTAssertEqual(try metricRows(warehouse, inCell: left), 0, "the emptied cell \(left) is still there")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testARerunAfterTheRollupFailedStillDeletesTheCellAPairLeft() async throws {
        let (source, warehouse, left) = try await fullRunThenAPairMovedAloneOutOfItsCell()

        // The fact write commits, the metric write fails (as if the run were killed between them).
        try await runWhoseRollupFails(source: source, warehouse: warehouse, asOf: "2020-10-15")

        // The fact table no longer shows where the pair was, so only a rebuild finds the cell it left.
        let rerun = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")
        XCTAssertTrue(rerun.refresh?.hasPrefix("full refresh: the writing stages are at different runs: stage 'engagement_metric'") == true,
                      "refresh: \(rerun.refresh ?? "nil")")
        XCTAssertEqual(try metricRows(warehouse, inCell: left), 0, "the cell \(left) the pair left is still there")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testAHalfFinishedFullRefreshAtAnEarlierAsOfIsFollowedByAFullRefresh() async throws {
        let source = try Incremental.privateSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")

        // Rebuilt as of 09-01: the fact commits, the metrics fail and keep 10-15.
        try await runWhoseRollupFails(source: source, warehouse: warehouse, asOf: "2020-09-01", fullRefresh: true)

        // Windows that closed between 09-01 and 10-15 must be filled in again.
        let rerun = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")
        XCTAssertTrue(rerun.refresh?.hasPrefix("full refresh: the writing stages are at different runs") == true,
                      "refresh: \(rerun.refresh ?? "nil")")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testChangedReferenceDataForcesAFullRefreshNamingTheExtract() async throws {
        let source = try Incremental.privateSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")

        // Partner 2 moves to partner 1's number: its experiences now match partner 1.
        try TestDatabase.connect(source).execute("UPDATE partner SET provider_number = '8047100037' WHERE id = 2")
        let changed = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")
        XCTAssertTrue(changed.refresh?.hasPrefix("full refresh: the content of extract 'partners' changed") == true,
                      "refresh: \(changed.refresh ?? "nil")")
        XCTAssertGreaterThan(changed.stage("userprogram_fact")?.written?.updated ?? 0, 0, "the change must move fact rows")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
    }

    func testAFailedRunKeepsThePreviousStateAndTheNextRunRebuildsTheTablesItLeftMixed() async throws {
        let source = try Incremental.privateSource()
        try Incremental.holdBack(source)
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        let first = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
        try Incremental.arrive(source)

        // New and updated fact rows violate the constraint; existing rows are not checked.
        let dw = try TestDatabase.connect(warehouse)
        try dw.execute("ALTER TABLE dw.userprogram_fact ADD CONSTRAINT no_new CHECK (user_id < 0) NOT VALID")
        let failed = try await Incremental.run(source: source, warehouse: warehouse, asOf: "2020-10-20")
        XCTAssertEqual(failed.status, .failed, failed.summaryTable)
        XCTAssertEqual(failed.stage("userprogram_fact")?.status, .failed, failed.summaryTable)
        XCTAssertTrue(failed.refresh?.hasPrefix("incremental") == true, "refresh: \(failed.refresh ?? "nil")")
        let stateSQL = "SELECT run_id::text FROM pipelinekit.refresh_state WHERE stage_id = $1"
        XCTAssertEqual(try dw.query(stateSQL, ["userprogram_fact"]).string(0, 0), first.runID.uuidString.lowercased(),
                       "the failed run moved userprogram_fact's refresh state")

        try dw.execute("ALTER TABLE dw.userprogram_fact DROP CONSTRAINT no_new")
        // The lookups' writes committed in the failed run, the fact's did not.
        let retried = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-20")
        XCTAssertTrue(retried.refresh?.hasPrefix("full refresh: the writing stages are at different runs") == true,
                      "refresh: \(retried.refresh ?? "nil")")
        XCTAssertEqual(try dw.query(stateSQL, ["userprogram_fact"]).string(0, 0), retried.runID.uuidString.lowercased())

        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-20")
    }

    func testAWarehouseTableTruncatedOrDroppedSinceTheLastRunIsRebuiltByAFullRefresh() async throws {
        let source = try Incremental.sharedSource()
        for damage in ["TRUNCATE dw.engagement_metric", "DROP SCHEMA dw CASCADE"] {
            let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
            _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
            try TestDatabase.connect(warehouse).execute(damage)

            let next = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-15")
            let expected = damage.hasPrefix("TRUNCATE")
                ? ("full refresh: stage 'engagement_metric', last written by run ", ": table dw.engagement_metric was emptied or rewritten since")
                : ("full refresh: stage 'partnerorg', last written by run ", ": table dw.partnerorg no longer exists")
            XCTAssertTrue(next.refresh.map { $0.hasPrefix(expected.0) && $0.contains(expected.1) } == true,
                          "\(damage): refresh: \(next.refresh ?? "nil")")
            try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-15")
            // The rebuild recorded the new tables: the next run is incremental again.
            _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-16")
        }
    }

    /// A version that did not know key gaps updates the state row without
    /// them: the gaps left there describe another run's watermark.
    func testKeyGapsThatAnotherRunsStateLeftBehindAreNotUsed() throws {
        let dw = try TestDatabase.connect(try TestDatabase.createDatabase("dost_dw_inc"))
        try dw.execute("CREATE SCHEMA dw; CREATE TABLE dw.fact (id int PRIMARY KEY)")
        try RefreshStateStore.ensureSchema(dw)
        let state = RefreshState(runID: UUID(), asOf: CivilDate(iso: "2020-10-15")!,
                                 fingerprint: RefreshFingerprint(stages: [:], variables: [:]),
                                 watermarks: ["calls": .tracked(key: "id", high: 10, snapshot: "9:9:")],
                                 gaps: ["calls": KeyGaps([4...4])])
        try RefreshStateStore.save(dw, pipeline: "p", stageID: "fact", state: state, table: "dw.fact")
        XCTAssertEqual(try RefreshStateStore.load(dw, pipeline: "p")["fact"]?.gaps, state.gaps)
        try dw.execute("UPDATE pipelinekit.refresh_state SET run_id = gen_random_uuid(), watermarks = '{\"calls\": {\"tracked\": {\"key\": \"id\", \"high\": 20, \"snapshot\": \"19:19:\"}}}'")
        XCTAssertEqual(try RefreshStateStore.load(dw, pipeline: "p")["fact"]?.gaps, [:],
                       "without gaps of its own run, the look-back is re-checked by transaction id")
    }

    func testTheStateRecordsEachTablesIdentityAndSeesItReplacedAPartitionedTableByItsOidAlone() throws {
        let dw = try TestDatabase.connect(try TestDatabase.createDatabase("dost_dw_inc"))
        try dw.execute("""
            CREATE SCHEMA dw; CREATE TABLE dw.plain (id int PRIMARY KEY);
            CREATE TABLE dw.parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
            CREATE TABLE dw.parted_1 PARTITION OF dw.parted FOR VALUES FROM (0) TO (100)
            """)
        try RefreshStateStore.ensureSchema(dw)
        let state = RefreshState(runID: UUID(), asOf: CivilDate(iso: "2020-10-15")!,
                                 fingerprint: RefreshFingerprint(stages: [:], variables: [:]), watermarks: [:])
        for table in ["dw.plain", "dw.parted"] {
            try RefreshStateStore.save(dw, pipeline: "p", stageID: table, state: state, table: table)
        }
        var loaded = try RefreshStateStore.load(dw, pipeline: "p")
        XCTAssertNil(loaded["dw.plain"]?.tablesChanged)
        XCTAssertNil(loaded["dw.parted"]?.tablesChanged, "a partitioned table, which has no file of its own")
        try dw.execute("TRUNCATE dw.plain, dw.parted")
        loaded = try RefreshStateStore.load(dw, pipeline: "p")
        XCTAssertEqual(loaded["dw.plain"]?.tablesChanged?.hasPrefix("table dw.plain was emptied or rewritten since"), true)
        try dw.execute("DROP TABLE dw.parted; CREATE TABLE dw.parted (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        loaded = try RefreshStateStore.load(dw, pipeline: "p")
        XCTAssertEqual(loaded["dw.parted"]?.tablesChanged?.hasPrefix("table dw.parted was emptied or rewritten since"), true)
    }

    func testARowGivenAKeyAboveItsSequenceForcesFullRefreshesInsteadOfHidingTheRowsAfterIt() async throws {
        let source = try Incremental.privateSource()
        let src = try TestDatabase.connect(source)
        try src.execute("""
            CREATE SEQUENCE campaign_id_seq OWNED BY campaign.id;
            SELECT setval('campaign_id_seq', (SELECT max(id) FROM campaign));
            ALTER TABLE campaign ALTER id SET DEFAULT nextval('campaign_id_seq')
            """)
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
        _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-02")

        // An import with its own ids, far above the sequence; then a call numbered by the sequence.
        let call = "experience_id, program_id, user_id, status, listen_secs, attempted_timestamp, call_start_time, call_end_time, programseq_id"
        try src.execute("INSERT INTO campaign (id, \(call)) SELECT 900000000000, \(call) FROM campaign WHERE call_start_time IS NOT NULL ORDER BY id LIMIT 1")
        try src.execute("INSERT INTO campaign (\(call)) SELECT \(call) FROM campaign WHERE call_start_time IS NOT NULL ORDER BY id LIMIT 1 OFFSET 1")
        for asOf in ["2020-10-03", "2020-10-04"] {
            let run = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: asOf)
            XCTAssertTrue(run.refresh?.hasPrefix("full refresh: extract 'calls': its highest id, 900000000000, is above what its sequence public.campaign_id_seq has handed out") == true,
                          "refresh: \(run.refresh ?? "nil")")
        }
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-04")
    }

    func testTheLineageRecordsTheRefreshModeAndWatermarks() async throws {
        let source = try Incremental.sharedSource()
        let warehouse = try TestDatabase.createDatabase("dost_dw_inc")
        let first = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
        let second = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-15")

        let dw = try TestDatabase.connect(warehouse)
        let refresh = try dw.query("""
            SELECT refresh->>'mode', (refresh->'watermarks'->'calls') ? 'high', refresh->'watermarks'->'calls'->>'high',
                   refresh->>'sinceRun', refresh->'previousWatermarks'->'calls'->>'high', refresh->'watermarks'->'calls'->>'key'
            FROM lineage.runs WHERE run_id = $1
            """, [second.runID.uuidString.lowercased()])
        XCTAssertEqual(refresh.rowCount, 1, "the incremental run is not in lineage.runs")
        guard refresh.rowCount == 1 else { return }
        XCTAssertEqual(refresh.string(0, 0), "incremental")
        XCTAssertEqual(refresh.string(0, 1), "t", "watermarks.calls has no 'high'")
        let maxCall = try TestDatabase.connect(source).query("SELECT max(id)::text FROM campaign").string(0, 0)
        XCTAssertEqual(refresh.string(0, 2), maxCall)
        XCTAssertEqual(refresh.string(0, 3), first.runID.uuidString.lowercased())
        XCTAssertEqual(refresh.string(0, 4), maxCall)
        XCTAssertEqual(refresh.string(0, 5), "id")
        XCTAssertEqual(try dw.query("SELECT refresh->>'mode' FROM lineage.runs WHERE run_id = $1",
                                    [first.runID.uuidString.lowercased()]).string(0, 0), "full")
    }
}

/// Sources, runs and warehouse comparison for the incremental refresh tests.
enum Incremental {
    static let users = "300"
    static let tables = ["partnerorg", "programlist", "userprogram_fact", "engagement_metric"]

    nonisolated(unsafe) static var shared: String?

    /// A sample source the caller may change.
    static func privateSource() throws -> String {
        let source = try TestDatabase.createDatabase("dost_src_inc")
        try TestDatabase.shell(["scripts/sample-data", "--url", source, "--users", users, "--seed", "7"])
        return source
    }

    /// One untouched sample source for the tests that only read it.
    static func sharedSource() throws -> String {
        if let shared { return shared }
        let source = try privateSource()
        shared = source
        return source
    }

    /// Moves the newest users, experiences and calls, and a scattering of old
    /// calls (late arrivals), out of the source into hb_* tables.
    static func holdBack(_ source: String) throws {
        let connection = try TestDatabase.connect(source)
        try connection.execute("""
            BEGIN;
            CREATE TABLE hb_users AS SELECT * FROM users WHERE created_on >= '2020-09-20';
            CREATE TABLE hb_exp AS SELECT * FROM experience
              WHERE created_on >= '2020-10-01' OR user_id IN (SELECT id FROM hb_users);
            CREATE TABLE hb_calls AS SELECT * FROM campaign
              WHERE attempted_timestamp >= '2020-10-01' OR id % 97 = 0 OR user_id IN (SELECT id FROM hb_users);
            DELETE FROM campaign
              WHERE attempted_timestamp >= '2020-10-01' OR id % 97 = 0 OR user_id IN (SELECT id FROM hb_users);
            DELETE FROM experience WHERE created_on >= '2020-10-01' OR user_id IN (SELECT id FROM hb_users);
            DELETE FROM users WHERE created_on >= '2020-09-20';
            COMMIT;
            """)
        let held = try connection.query("""
            SELECT (SELECT count(*) FROM hb_users), (SELECT count(*) FROM hb_exp),
                   (SELECT count(*) FROM hb_calls WHERE attempted_timestamp < '2020-09-01')
            """)
        for column in 0..<3 {
            XCTAssertGreaterThan(held.int(0, column) ?? 0, 0, "nothing held back (column \(column)): the sample changed")
        }
    }

    /// The held rows arrive: users with their ids, experiences and calls with
    /// new ids above every existing one, as real inserts would get.
    static func arrive(_ source: String) throws {
        try TestDatabase.connect(source).execute("""
            BEGIN;
            INSERT INTO users SELECT * FROM hb_users;
            INSERT INTO experience (id, user_id, program_id, provider_number, phone, created_on)
              SELECT (SELECT max(id) FROM experience) + row_number() OVER (ORDER BY id),
                     user_id, program_id, provider_number, phone, created_on
              FROM hb_exp;
            INSERT INTO campaign (id, experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                                  call_start_time, call_end_time, programseq_id)
              SELECT (SELECT max(id) FROM campaign) + row_number() OVER (ORDER BY id),
                     experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                     call_start_time, call_end_time, programseq_id
              FROM hb_calls;
            COMMIT;
            """)
    }

    static func run(source: String, warehouse: String, asOf: String, fullRefresh: Bool = false,
                    variables: [(name: String, value: String)] = []) async throws -> RunReport {
        try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: asOf, variables: variables),
                           fullRefresh: fullRefresh)
    }

    /// A run that must succeed.
    static func succeed(source: String, warehouse: String, asOf: String, fullRefresh: Bool = false,
                        variables: [(name: String, value: String)] = [],
                        file: StaticString = #filePath, line: UInt = #line) async throws -> RunReport {
        let report = try await run(source: source, warehouse: warehouse, asOf: asOf, fullRefresh: fullRefresh, variables: variables)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable, file: file, line: line)
        return report
    }

    /// A run that must succeed as an incremental refresh.
    static func succeedIncrementally(source: String, warehouse: String, asOf: String,
                                     variables: [(name: String, value: String)] = [],
                                     file: StaticString = #filePath, line: UInt = #line) async throws -> RunReport {
        let report = try await succeed(source: source, warehouse: warehouse, asOf: asOf, variables: variables, file: file, line: line)
        XCTAssertTrue(report.refresh?.hasPrefix("incremental") == true, "refresh: \(report.refresh ?? "nil")", file: file, line: line)
        return report
    }

    /// A fresh warehouse built by one full refresh.
    static func fullWarehouse(source: String, asOf: String, variables: [(name: String, value: String)] = [],
                              file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let warehouse = try TestDatabase.createDatabase("dost_dw_full")
        let report = try await run(source: source, warehouse: warehouse, asOf: asOf, variables: variables)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable, file: file, line: line)
        XCTAssertTrue(report.refresh?.hasPrefix("full refresh") == true, "refresh: \(report.refresh ?? "nil")",
                      file: file, line: line)
        return warehouse
    }

    /// `warehouse` (refreshed incrementally) equals a full refresh of `source` as of `asOf`; returns that full warehouse.
    @discardableResult
    static func assertEqualsFullRefresh(_ warehouse: String, source: String, asOf: String,
                                        variables: [(name: String, value: String)] = [],
                                        file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let full = try await fullWarehouse(source: source, asOf: asOf, variables: variables, file: file, line: line)
        try assertWarehousesEqual(incremental: warehouse, full: full, file: file, line: line)
        return full
    }

    /// The four warehouse tables hold the same rows, every column but the bookkeeping ones compared as text.
    static func assertWarehousesEqual(incremental: String, full: String,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let inc = try TestDatabase.connect(incremental), reference = try TestDatabase.connect(full)
        for table in tables {
            let columnsSQL = """
                SELECT column_name FROM information_schema.columns
                WHERE table_schema = 'dw' AND table_name = $1 AND column_name NOT IN ('_run_id', '_updated_at')
                ORDER BY ordinal_position
                """
            let columns = try reference.query(columnsSQL, [table]).rows.compactMap { $0[0] }
            XCTAssertFalse(columns.isEmpty, "dw.\(table) has no columns in the full warehouse", file: file, line: line)
            XCTAssertEqual(try inc.query(columnsSQL, [table]).rows.compactMap { $0[0] }.sorted(), columns.sorted(),
                           "dw.\(table) columns", file: file, line: line)
            let select = "SELECT \(columns.map { SQL.ident($0) }.joined(separator: ", ")) FROM dw.\(table)"
            let expected = try TestDatabase.rows(reference, select), got = try TestDatabase.rows(inc, select)
            XCTAssertFalse(expected.isEmpty, "dw.\(table) is empty after a full refresh", file: file, line: line)
            XCTAssertEqual(got.count, expected.count, "dw.\(table) row count", file: file, line: line)
            let expectedSet = Set(expected), gotSet = Set(got)
            let missing = expectedSet.subtracting(gotSet).sorted(), extra = gotSet.subtracting(expectedSet).sorted()
            XCTAssertTrue(missing.isEmpty && extra.isEmpty, """
                dw.\(table) (\(columns.joined(separator: "|"))): \(missing.count) rows of the full refresh missing, \
                e.g. \(missing.prefix(3)); \(extra.count) rows not in the full refresh, e.g. \(extra.prefix(3))
                """, file: file, line: line)
        }
    }
}
