import Foundation
import XCTest
@testable import PipelineKit

/// When a run may refresh incrementally, and why it falls back to a full refresh.
final class RefreshDecisionTests: XCTestCase {
    private let fingerprint = RefreshFingerprint(stages: ["calls": "c1", "fact": "f1"], variables: ["min_listen_secs": "v30"])
    private let watermarks: [String: Watermark] = [
        "calls": .tracked(key: "id", high: 100, snapshot: "900:905:901"),
        "partners": .content(sha256: "p1"),
    ]
    private let day = CivilDate(iso: "2020-10-15")!

    private func state(asOf: String = "2020-10-15", fingerprint: RefreshFingerprint? = nil,
                       watermarks: [String: Watermark]? = nil, committedAt: Double = 1000) -> RefreshState {
        RefreshState(runID: UUID(), asOf: CivilDate(iso: asOf)!, fingerprint: fingerprint ?? self.fingerprint,
                     watermarks: watermarks ?? self.watermarks, committedAt: Date(timeIntervalSince1970: committedAt))
    }

    private func decide(asOf: String = "2020-10-16", fullRefresh: Bool = false, states: [String: RefreshState],
                        writers: [String] = ["fact"], fingerprint: RefreshFingerprint? = nil,
                        current: [String: Watermark]? = nil) throws -> RefreshPlan.Mode {
        try RefreshPlanner.decide(asOf: CivilDate(iso: asOf)!, fullRefresh: fullRefresh, states: states, writers: writers,
                                  fingerprint: fingerprint ?? self.fingerprint, current: current ?? watermarks)
    }

    private func reason(_ mode: RefreshPlan.Mode) -> String? {
        if case .full(let reason) = mode { return reason }
        return nil
    }

    func testTheFirstRunIsAFullRefresh() throws {
        XCTAssertEqual(reason(try decide(states: [:])), "no earlier run has committed refresh state (first run)")
    }

    func testAWrittenTableEmptiedReplacedOrDroppedSinceForcesAFullRefreshNamingIt() throws {
        var previous = state()
        previous.tables = ["dw.fact": "16384:16390"]
        previous.tablesNow = ["dw.fact": "16384:16390"]
        XCTAssertEqual(try decide(states: ["fact": previous]), .incremental(since: previous))

        previous.tablesNow = ["dw.fact": "16384:16402"]
        XCTAssertEqual(reason(try decide(states: ["fact": previous])),
                       "stage 'fact', last written by run \(previous.shortRunID): table dw.fact was emptied or rewritten since (TRUNCATE, VACUUM FULL, CLUSTER, or dropped and created again)")
        previous.tablesNow = [:]
        XCTAssertEqual(reason(try decide(states: ["fact": previous])),
                       "stage 'fact', last written by run \(previous.shortRunID): table dw.fact no longer exists")
    }

    func testAStateThatRecordedNoTablesForcesOneFullRefresh() throws {
        var previous = state()
        previous.tables = nil
        XCTAssertEqual(reason(try decide(states: ["fact": previous])),
                       "stage 'fact', last written by run \(previous.shortRunID): its state was saved by an earlier version, which did not record the tables it wrote")
    }

    func testKeyGapsSavedOnlyByALaterWriteOfTheSameRunAreTheOnesReadBelowTheWatermark() throws {
        let lookup = state(committedAt: 1000)
        var fact = lookup
        fact.committedAt = Date(timeIntervalSince1970: 1001)
        fact.gaps = ["calls": KeyGaps([42...42])]
        let mode = try decide(states: ["lookup": lookup, "fact": fact], writers: ["lookup", "fact"])
        guard case .incremental(let since) = mode else { return XCTFail("\(mode)") }
        XCTAssertEqual(since.committedAt, lookup.committedAt, "changes are counted from the oldest write")
        XCTAssertEqual(since.gaps, fact.gaps, "the lookup committed before the run's gap search ended")
    }

    func testAnUnchangedPipelineWithNewRowsRunsIncrementallySinceTheCommittedState() throws {
        let previous = state()
        let current: [String: Watermark] = ["calls": .tracked(key: "id", high: 250, snapshot: "990:990:"), "partners": .content(sha256: "p1")]
        XCTAssertEqual(try decide(states: ["fact": previous], current: current), .incremental(since: previous))
    }

    func testFullRefreshIsHonouredEvenWhenIncrementalWouldWork() throws {
        XCTAssertEqual(reason(try decide(fullRefresh: true, states: ["fact": state()])), "--full-refresh was given")
    }

    func testAnEarlierAsOfIsRefusedNamingTheLastOneAndTheWayOut() throws {
        XCTAssertThrowsError(try decide(asOf: "2020-10-01", states: ["fact": state()])) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("2020-10-15") && text.contains("--full-refresh"), text)
        }
        XCTAssertEqual(reason(try decide(asOf: "2020-10-01", fullRefresh: true, states: ["fact": state()])), "--full-refresh was given")
    }

    func testTheSameAsOfRunsIncrementally() throws {
        XCTAssertNotNil(try decide(asOf: "2020-10-15", states: ["fact": state()]).since)
    }

    func testAWriterWithoutStateForcesAFullRefreshNamingIt() throws {
        XCTAssertEqual(reason(try decide(states: ["fact": state()], writers: ["fact", "metrics"])),
                       "stage 'metrics' has no committed refresh state")
    }

    func testAfterARunKilledBetweenTwoWritesTheWarehouseIsRebuiltNamingBothStages() throws {
        let older = state(asOf: "2020-10-14", committedAt: 1000)
        let newer = state(asOf: "2020-10-15", committedAt: 2000)
        XCTAssertEqual(reason(try decide(states: ["fact": newer, "metrics": older], writers: ["fact", "metrics"])),
                       "the writing stages are at different runs: stage 'metrics' at run \(older.shortRunID), stage 'fact' at run \(newer.shortRunID) (a run failed or was stopped between its writes, or ran with --select)")
    }

    func testAHalfFinishedFullRefreshAtAnEarlierAsOfIsNotFollowedByAnIncrementalRun() throws {
        // The fact was rebuilt as of 09-01, the metrics still hold 10-15.
        let metrics = state(asOf: "2020-10-15", committedAt: 1000)
        let fact = state(asOf: "2020-09-01", committedAt: 2000)
        XCTAssertNotNil(reason(try decide(asOf: "2020-10-15", states: ["fact": fact, "metrics": metrics], writers: ["fact", "metrics"])))
    }

    func testWritersThatAllCommittedInOneRunRunIncrementally() throws {
        let fact = state(committedAt: 1000)
        let metrics = RefreshState(runID: fact.runID, asOf: fact.asOf, fingerprint: fact.fingerprint, watermarks: fact.watermarks,
                                   committedAt: Date(timeIntervalSince1970: 1001))
        XCTAssertEqual(try decide(states: ["fact": fact, "metrics": metrics], writers: ["fact", "metrics"]), .incremental(since: fact))
    }

    func testAChangedVariableForcesAFullRefreshNamingTheVariable() throws {
        let changed = RefreshFingerprint(stages: ["calls": "c1", "fact": "f2"], variables: ["min_listen_secs": "v45"])
        XCTAssertEqual(reason(try decide(states: ["fact": state()], fingerprint: changed)),
                       "variable 'min_listen_secs' changed since the last run")
    }

    func testAChangedStageConfigurationForcesAFullRefreshNamingTheStage() throws {
        let changed = RefreshFingerprint(stages: ["calls": "c2", "fact": "f1", "new": "n1"], variables: ["min_listen_secs": "v30"])
        XCTAssertEqual(reason(try decide(states: ["fact": state()], fingerprint: changed)),
                       "stage configuration changed: 'calls' changed, 'new' was added")
    }

    func testAVariableNoStageUsesDoesNotForceAFullRefresh() throws {
        let changed = RefreshFingerprint(stages: fingerprint.stages, variables: ["min_listen_secs": "v30", "unused": "x"])
        XCTAssertNotNil(try decide(states: ["fact": state()], fingerprint: changed).since)
    }

    func testChangedReferenceDataForcesAFullRefreshNamingTheExtract() throws {
        var current = watermarks
        current["partners"] = .content(sha256: "p2")
        XCTAssertEqual(reason(try decide(states: ["fact": state()], current: current)),
                       "the content of extract 'partners' changed since the last run (untracked extracts are compared whole)")
    }

    func testAReloadedSourceWhoseHighestKeyWentDownForcesAFullRefresh() throws {
        var current = watermarks
        current["calls"] = .tracked(key: "id", high: 40, snapshot: "990:990:")
        XCTAssertEqual(reason(try decide(states: ["fact": state()], current: current)),
                       "extract 'calls': the highest id went down from 100 to 40, so the source was reloaded")
    }

    func testANewlyTrackedExtractForcesAFullRefresh() throws {
        var current = watermarks
        current["users"] = .tracked(key: "id", high: 7, snapshot: "990:990:")
        XCTAssertEqual(reason(try decide(states: ["fact": state()], current: current)),
                       "extract 'users' has no watermark from the last run")
    }

    func testTheFingerprintIgnoresAsOfButNotOtherVariables() throws {
        func pipeline(asOf: String, minimum: String) throws -> PipelineDefinition {
            try loadPipeline("""
                pipeline: p
                connections: {db: {url: "host=/tmp dbname=x"}}
                variables: {minimum: {type: int, default: \(minimum)}}
                stages:
                  - id: e
                    type: pgExtract
                    config: {connection: db, table: t, columns: {id: bigint}, where: "id > ${minimum} AND day < '${as_of}'"}
                """, options: loadOptions(asOf: CivilDate(iso: asOf)))
        }
        let base = RefreshFingerprint(pipeline: try pipeline(asOf: "2020-10-15", minimum: "30"))
        XCTAssertEqual(RefreshFingerprint(pipeline: try pipeline(asOf: "2020-10-16", minimum: "30")), base)
        XCTAssertNotEqual(RefreshFingerprint(pipeline: try pipeline(asOf: "2020-10-15", minimum: "45")), base)
    }
}

private extension RefreshPlan.Mode {
    var since: RefreshState? {
        if case .incremental(let since) = self { return since }
        return nil
    }
}
