import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// The lineage log, its hash chain, the warehouse mirror and secrets.
final class LineageTests: XCTestCase {
    func temporaryLog() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lineage-\(UUID().uuidString)/events.jsonl").path
    }

    func run(_ pipeline: PipelineDefinition, log: String) async throws -> RunReport {
        try await Dost.run(pipeline, log: try LineageLog(path: log))
    }

    func events(_ path: String) throws -> [JSON] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap(JSON.parse)
    }

    func testARunEmitsOpenLineageEventsForThePipelineAndEveryStageWithRealCounts() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let log = temporaryLog()
        let pipeline = try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15")
        let report = try await run(pipeline, log: log)
        XCTAssertEqual(report.status, .succeeded)
        let all = try events(log)
        let runID = report.runID.uuidString.lowercased()
        let pipelineEvents = all.filter { $0["job"]?["name"]?.string == "dost_warehouse" }
        XCTAssertEqual(pipelineEvents.map { $0["eventType"]?.string }, ["START", "COMPLETE"])
        XCTAssertTrue(pipelineEvents.allSatisfy { $0["run"]?["runId"]?.string == runID })
        for event in all {
            for key in ["eventTime", "eventType", "producer", "schemaURL"] { XCTAssertNotNil(event[key]?.string, key) }
            XCTAssertEqual(event["job"]?["namespace"]?.string, "pipelinekit")
            XCTAssertNotNil(UUID(uuidString: event["run"]?["runId"]?.string ?? ""))
        }
        let facet = try XCTUnwrap(pipelineEvents[0]["run"]?["facets"]?["pipelinekit_run"])
        XCTAssertEqual(facet["pipelineFileSHA256"]?.string, pipeline.fileSHA256)
        XCTAssertEqual(facet["variables"]?["as_of"]?.string, "2020-10-15")
        XCTAssertEqual(facet["variables"]?["min_listen_secs"]?.string, "30")
        for stage in pipeline.stages {
            let stageEvents = all.filter { $0["job"]?["name"]?.string == "dost_warehouse.\(stage.id)" }
            XCTAssertEqual(stageEvents.map { $0["eventType"]?.string }, ["START", "COMPLETE"], stage.id)
            XCTAssertEqual(stageEvents.last?["run"]?["facets"]?["parent"]?["run"]?["runId"]?.string, runID)
            XCTAssertEqual(stageEvents.last?["run"]?["facets"]?["pipelinekit_stage"]?["configSHA256"]?.string, stage.configFingerprint)
        }
        // Output counts in the events equal the tables' real row counts.
        let dw = try TestDatabase.connect(warehouse)
        for table in ["partnerorg", "programlist", "userprogram_fact", "engagement_metric"] {
            let output = all.compactMap { event -> JSON? in
                guard case .array(let outputs)? = event["outputs"] else { return nil }
                return outputs.first { $0["name"]?.string?.hasSuffix(".dw.\(table)") == true }
            }.last
            let rows = try XCTUnwrap(output?["outputFacets"]?["outputStatistics"]?["rowCount"]?.int, table)
            XCTAssertEqual(rows, try dw.query("SELECT count(*) FROM dw.\(table)").int(0, 0), table)
            XCTAssertTrue(output?["namespace"]?.string?.hasPrefix("postgres://") == true)
        }
        let quality = all.last { $0["job"]?["name"]?.string == "dost_warehouse.userprogram" }?["run"]?["facets"]?["pipelinekit_dataQuality"]?["excludedRows"]
        XCTAssertEqual(quality?["event_without_group"]?.int, report.stage("userprogram")?.excluded["event_without_group"])
        XCTAssertNotNil(quality?["event_without_group"])
        // The mirror agrees, and its last hash is the log's last line.
        let mirror = try dw.query("SELECT status, last_log_hash FROM lineage.runs WHERE run_id = $1", [runID])
        XCTAssertEqual(mirror.string(0, 0), "succeeded")
        XCTAssertEqual(mirror.string(0, 1), try LineageVerifier.verify(path: log).lastHash)
        XCTAssertEqual(try dw.query("SELECT count(*) FROM lineage.stage_runs WHERE run_id = $1", [runID]).int(0, 0), pipeline.stages.count)
        XCTAssertEqual(try dw.query("SELECT inserted FROM lineage.dataset_writes WHERE run_id = $1 AND dataset = 'dw.userprogram_fact'", [runID]).int(0, 0),
                       report.stage("userprogram_fact")?.written?.inserted)
    }

    func testARetriedStageAndAFailedRunAreVisibleInTheLog() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let log = temporaryLog()
        // The calls extract fails permanently (a column that does not exist); userprogram depends on it.
        let yaml = try Dost.yaml()
            .replacingOccurrences(of: "columns: {user_id: bigint, program_id: int, listen_secs: int, call_start_time: timestamptz, programseq_id: bigint}",
                                  with: "columns: {user_id: bigint, program_id: int, listen_secs: int, call_start_time: timestamptz, no_such_column: bigint}")
        let pipeline = try Dost.loadPipeline(yaml: yaml, source: source, warehouse: warehouse)
        let report = try await run(pipeline, log: log)
        XCTAssertEqual(report.status, .failed)
        let all = try events(log)
        let calls = all.filter { $0["job"]?["name"]?.string == "dost_warehouse.calls" }
        XCTAssertEqual(calls.last?["eventType"]?.string, "FAIL")
        let message = calls.last?["run"]?["facets"]?["errorMessage"]?["message"]?.string ?? ""
        XCTAssertTrue(message.contains("no_such_column") && message.contains("SQLSTATE 42703"), message)
        XCTAssertEqual(all.last { $0["job"]?["name"]?.string == "dost_warehouse.userprogram" }?["eventType"]?.string, "ABORT")
        XCTAssertEqual(all.last?["eventType"]?.string, "FAIL")
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT status FROM lineage.runs").string(0, 0), "failed")
    }

    func testATransientFailureShowsTheRetriedAttemptWithItsError() throws {
        let log = temporaryLog()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let recorder = LineageRecorder(log: try LineageLog(path: log), logger: logger)
        let pipeline = try PipelineLoader(registry: .standard).load(
            data: Data("pipeline: toy\nstages:\n  - id: a\n    type: pgExtract\n    config: {connection: c, table: t, columns: {id: bigint}}\nconnections: {c: 'host=/nonexistent'}\n".utf8),
            file: "toy.yaml")
        let info = RunInfo(runID: UUID(), pipeline: pipeline, startedAt: Date())
        let stage = pipeline.stages[0]
        recorder.stageStarted(info, stage: stage, attempt: 1)
        recorder.stageRetrying(info, stage: stage, attempt: 1, error: PGError(kind: .server, sqlState: "40001", message: "could not serialize access"), delay: 1.5)
        recorder.stageStarted(info, stage: stage, attempt: 2)
        recorder.flush()
        let all = try events(log)
        XCTAssertEqual(all.map { $0["eventType"]?.string }, ["START", "RUNNING"])
        let retry = try XCTUnwrap(all[1]["run"]?["facets"]?["pipelinekit_retry"])
        XCTAssertEqual(retry["failedAttempt"]?.int, 1)
        XCTAssertEqual(retry["nextAttempt"]?.int, 2)
        XCTAssertEqual(retry["sqlState"]?.string, "40001")
        XCTAssertTrue(retry["error"]?.string?.contains("could not serialize access") == true)
    }

    func testALogPathThatIsADirectoryOrAPipeIsRefusedInsteadOfWaitingForAWriter() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lineage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let pipe = directory.appendingPathComponent("events.jsonl").path
        XCTAssertEqual(mkfifo(pipe, 0o600), 0)
        for (path, reason) in [(directory.path, "it is a directory"), (pipe, "it is not a file (a pipe, socket or block device)")] {
            XCTAssertThrowsError(try LineageLog(path: path)) { error in
                XCTAssertTrue(String(describing: error).contains(reason), "\(error)")
            }
        }
        XCTAssertNil(LineageLog.unusable("/dev/null"), "a device that discards the log is fine")
    }

    func testALogUnderAFileOrAnUncreatableDirectoryIsRefusedSayingWhichAndWhy() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lineage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("pipeline.yaml").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        for (path, reason) in [
            (file + "/sub/events.jsonl", "'\(file)' is not a directory; give a path whose directories are directories"),
            ("/proc/pipelinekit-none/events.jsonl", "cannot create the directory '/proc/pipelinekit-none': No such file or directory"),
        ] {
            XCTAssertThrowsError(try LineageLog(path: path)) { error in
                XCTAssertEqual(String(describing: error), "cannot use \(path) as the lineage log: \(reason)")
            }
        }
        let created = directory.appendingPathComponent("a/b/events.jsonl").path
        XCTAssertNoThrow(try LineageLog(path: created), "missing directories are created")
        XCTAssertTrue(FileManager.default.fileExists(atPath: created))
    }

    func testTwoRunsSharingALogAppendAfterEachOtherAndKeepOneIntactChain() throws {
        let path = temporaryLog()
        // Both open the log before either writes, as a run waiting for another's lock does.
        let first = try LineageLog(path: path), second = try LineageLog(path: path)
        for index in 0..<3 { try first.append(OpenLineage.event(type: "START", runID: UUID(), job: "first\(index)")) }
        for index in 0..<3 { try second.append(OpenLineage.event(type: "START", runID: UUID(), job: "second\(index)")) }
        try first.append(OpenLineage.event(type: "COMPLETE", runID: UUID(), job: "first3"))

        let jobs = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
            JSON.parse(line)?["job"]?["name"]?.string ?? "?"
        }
        XCTAssertEqual(jobs, ["first0", "first1", "first2", "second0", "second1", "second2", "first3"])
        let result = try LineageVerifier.verify(path: path)
        XCTAssertTrue(result.isIntact, "\(result.problems)")
        XCTAssertEqual(result.events, 7)
    }

    // MARK: the mirror

    func testARunIsFoundByTheFirstDigitsSummariesPrintAndAnAmbiguousOrUnknownIdSaysSo() throws {
        let warehouse = try TestDatabase.createDatabase("lineage_ids")
        let dw = try TestDatabase.connect(warehouse)
        try dw.execute("CREATE SCHEMA lineage; CREATE TABLE lineage.runs (run_id uuid PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now())")
        let ids = ["5f0c1e2a-0000-4000-8000-000000000001", "5f0c1e2a-1111-4000-8000-000000000002", "7d3e9b10-2222-4000-8000-000000000003"]
        for id in ids { try dw.query("INSERT INTO lineage.runs (run_id) VALUES ($1::uuid)", [id]) }
        let queries = try LineageQueries(warehouse: ConnInfo(warehouse))

        XCTAssertEqual(try queries.resolveRun("7d3e9b10"), ids[2])
        XCTAssertEqual(try queries.resolveRun("7D3E9B10-2222-4000-8000-000000000003"), ids[2], "an id in capitals")
        XCTAssertEqual(try queries.resolveRun("5f0c1e2a-1"), ids[1])
        for (id, message) in [
            ("5f0c1e2a", "run id 5f0c1e2a is ambiguous: it begins 2 runs (\(ids[0]), \(ids[1])); give more digits"),
            ("abcdef12", "no run abcdef12 in the lineage mirror; `runner lineage runs PIPELINE` lists them"),
            ("5f0c%", "'5f0c%' is not a run id: give one as `runner lineage runs` lists it, or its first digits"),
        ] {
            XCTAssertThrowsError(try queries.resolveRun(id)) { XCTAssertEqual(String(describing: $0), message) }
        }
    }

    // MARK: verify

    func writeLog(events count: Int) throws -> (path: String, lines: [String]) {
        let path = temporaryLog()
        let log = try LineageLog(path: path)
        for index in 0..<count {
            try log.append(OpenLineage.event(type: "START", runID: UUID(), job: "job\(index)"))
        }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        return (path, lines)
    }

    func rewrite(_ path: String, _ lines: [String], trailingNewline: Bool = true) throws {
        try (lines.joined(separator: "\n") + (trailingNewline ? "\n" : "")).write(toFile: path, atomically: true, encoding: .utf8)
    }

    func testARetryAfterALostCommitAcknowledgementKeepsTheCountsOfTheWriteThatCommitted() async throws {
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let pipeline = try Dost.loadPipeline(source: try Dost.sourceDatabase(), warehouse: warehouse, asOf: "2020-10-15")
        let report = try await Dost.run(pipeline)
        let written = try XCTUnwrap(report.stage("userprogram_fact")?.written)
        XCTAssertGreaterThan(written.inserted, 0)

        // The retry of a stage whose COMMIT went through unacknowledged finds nothing to change.
        let dw = try TestDatabase.connect(warehouse)
        try dw.transaction {
            try LineageMirror.recordWrite(dw, runID: report.runID, stageID: "userprogram_fact", table: "dw.userprogram_fact",
                                          counts: WriteCounts(unchanged: written.inserted))
        }
        let recorded = try dw.query("""
            SELECT inserted, unchanged FROM lineage.dataset_writes WHERE run_id = $1 AND stage_id = 'userprogram_fact'
            """, [report.runID.uuidString.lowercased()])
        XCTAssertEqual(recorded.int(0, 0), written.inserted)
        XCTAssertEqual(recorded.int(0, 1), 0)
    }

    func testARunWhoseMirrorSessionIsEndedStillRecordsItsOutcomeThere() async throws {
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let pipeline = try Dost.loadPipeline(yaml: try Dost.yamlWithSlowCalls(pause: 2), source: try Dost.sourceDatabase(),
                                             warehouse: warehouse)
        let run = Task { try await Dost.run(pipeline) }
        let admin = try TestDatabase.connect(warehouse)
        // Once the run's row is in the mirror, the server ends the mirror's session.
        var ended = 0
        for _ in 0..<300 where ended == 0 {
            if try admin.query("SELECT to_regclass('lineage.runs') IS NOT NULL").string(0, 0) == "t",
               try admin.query("SELECT count(*) FROM lineage.runs").int(0, 0) == 1 {
                ended = try admin.query("""
                    SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
                    WHERE application_name LIKE 'runner/%/lineage' AND datname = current_database()
                    """).int(0, 0) ?? 0
            }
            if ended == 0 { try await Task.sleep(nanoseconds: 20_000_000) }
        }
        XCTAssertEqual(ended, 1, "the mirror's session was never seen")
        let report = try await run.value
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        let recorded = try admin.query("""
            SELECT status, (SELECT count(*) FROM lineage.stage_runs s WHERE s.run_id = r.run_id) FROM lineage.runs r WHERE run_id = $1
            """, [report.runID.uuidString.lowercased()])
        XCTAssertEqual(recorded.string(0, 0), "succeeded")
        XCTAssertEqual(recorded.int(0, 1), report.stages.count)
    }

    func testVerifyAcceptsAnIntactLog() throws {
        let (path, _) = try writeLog(events: 5)
        let result = try LineageVerifier.verify(path: path)
        XCTAssertTrue(result.isIntact, "\(result.problems)")
        XCTAssertEqual(result.events, 5)
    }

    func testVerifyNamesTheLineAfterAnEditedLine() throws {
        var (path, lines) = try writeLog(events: 5)
        lines[1] = lines[1].replacingOccurrences(of: "job1", with: "jobX")
        try rewrite(path, lines)
        let result = try LineageVerifier.verify(path: path)
        XCTAssertFalse(result.isIntact)
        XCTAssertTrue(result.problems[0].hasPrefix("line 3:"), result.problems[0])
    }

    func testVerifyDetectsARemovedLine() throws {
        var (path, lines) = try writeLog(events: 5)
        lines.remove(at: 2)
        try rewrite(path, lines)
        let result = try LineageVerifier.verify(path: path)
        XCTAssertTrue(result.problems.first?.hasPrefix("line 3:") == true, "\(result.problems)")
    }

    func testVerifyNamesTheFirstLineWhenTheLinesBeforeItWereRemoved() throws {
        var (path, lines) = try writeLog(events: 5)
        lines.removeFirst()
        try rewrite(path, lines)
        let result = try LineageVerifier.verify(path: path)
        XCTAssertEqual(result.problems.first?.hasPrefix("line 1: chain broken"), true, "\(result.problems)")
        XCTAssertTrue(result.problems.first?.hasSuffix("it is the first line; lines before it were removed") == true, "\(result.problems)")
    }

    func testVerifyDetectsReorderedLines() throws {
        var (path, lines) = try writeLog(events: 5)
        lines.swapAt(1, 3)
        try rewrite(path, lines)
        let result = try LineageVerifier.verify(path: path)
        XCTAssertTrue(result.problems.first?.hasPrefix("line 2:") == true, "\(result.problems)")
    }

    func testVerifyReportsAnIncompleteLastLineAndTheNextRunChainsPastIt() throws {
        var (path, lines) = try writeLog(events: 3)
        lines[2] = String(lines[2].prefix(40))
        try rewrite(path, lines, trailingNewline: false)
        let cut = try LineageVerifier.verify(path: path)
        XCTAssertFalse(cut.isIntact)
        XCTAssertTrue(cut.problems.first?.contains("line 3: incomplete last line") == true, "\(cut.problems)")

        let log = try LineageLog(path: path)
        try log.append(OpenLineage.event(type: "START", runID: UUID(), job: "next"))
        let healed = try LineageVerifier.verify(path: path)
        XCTAssertTrue(healed.isIntact, "\(healed.problems)")
        XCTAssertEqual(healed.notes.count, 1)
        XCTAssertEqual(healed.events, 3)
    }

    func testVerifyAgainstTheWarehouseDetectsCutOffLastLines() throws {
        let (path, lines) = try writeLog(events: 4)
        let lastHash = LineageLog.sha256(lines[3])
        try rewrite(path, Array(lines.prefix(2)))
        XCTAssertTrue(try LineageVerifier.verify(path: path).isIntact, "a clean cut is undetectable without the warehouse")
        let result = try LineageVerifier.verify(path: path, knownLastHashes: [(run: "r1", hash: lastHash)])
        XCTAssertFalse(result.isIntact)
        XCTAssertTrue(result.problems[0].contains("run r1"), result.problems[0])
    }

    // MARK: secrets

    func testAPasswordNeverAppearsInTheLogTheMirrorTheSummaryOrErrors() async throws {
        let secret = "pk-s3cret-\(UUID().uuidString.prefix(6))"
        let source = try Dost.sourceDatabase() + " password=\(secret)"
        let warehouse = try TestDatabase.createDatabase("dost_dw") + " password=\(secret)"
        let log = temporaryLog()
        let good = try await run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-15"), log: log)
        XCTAssertEqual(good.status, .succeeded, good.summaryTable)
        // A failing connection: the error names the target without the password.
        let unreachable = "host=127.0.0.1 port=1 dbname=x user=u password=\(secret) connect_timeout=1"
        let bad = try await run(try Dost.loadPipeline(source: unreachable, warehouse: warehouse, asOf: "2020-10-15"), log: log)
        XCTAssertEqual(bad.status, .failed)
        let error = try XCTUnwrap(bad.stages.compactMap(\.error).first)
        XCTAssertTrue(error.contains("host=127.0.0.1") && error.contains("port=1"), error)

        var everything = try String(contentsOfFile: log, encoding: .utf8) + good.summaryTable + bad.summaryTable
        everything += bad.stages.compactMap(\.error).joined() + String(describing: try JSONEncoder().encode(bad))
        let dw = try TestDatabase.connect(warehouse)
        for table in ["runs", "stage_runs", "dataset_writes"] {
            everything += try dw.query("SELECT t::text FROM lineage.\(table) t").rows.map { $0[0] ?? "" }.joined()
        }
        everything += ConnInfo(unreachable).redacted + PGError(kind: .connection, message: "x", target: ConnInfo(warehouse).redacted).description
        XCTAssertFalse(everything.contains(secret), "the password leaked")
        XCTAssertGreaterThan(everything.count, 10_000)
    }
}
