import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// Faults injected from outside against a real PostgreSQL and, where the CLI's own
/// behaviour is the point (signals, exit codes, the run lock), the real `runner`
/// binary as a child process.
final class FaultTests: XCTestCase {
    // MARK: pipelines and databases

    /// The Dost pipeline whose calls extract sleeps before its first row, so the
    /// COPY that `userprogram` scans stays open for `seconds`.
    /// Terminates, from another session, the first active backend of `application`
    /// whose query matches `queryLike`; `stop()` on the result says whether it happened.
    static func terminateOnce(database: String, application: String, queryLike: String) -> BackgroundLoop {
        let killer = BackgroundLoop(conninfo: admin)
        killer.start { connection in
            let result = try connection.query("""
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = $1 AND application_name = $2 AND state = 'active' AND query LIKE $3
                """, [database, application, queryLike])
            return result.rowCount > 0 ? .stop : .continue
        }
        return killer
    }

    func temporaryFile(_ text: String, name: String = "pipeline.yaml") throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("faults-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func load(_ yaml: String, source: String, warehouse: String, asOf: String = "2020-10-15") throws -> PipelineDefinition {
        try PipelineLoader(registry: .standard).load(path: try temporaryFile(yaml),
                                                     options: LoadOptions(environment: Self.environment(source: source, warehouse: warehouse),
                                                                          asOf: CivilDate(iso: asOf)))
    }

    static func environment(source: String, warehouse: String) -> [String: String] {
        var environment = Dost.environment(source: source, warehouse: warehouse)
        environment["RUNNER_LOG_LEVEL"] = "info"
        return environment
    }

    static func databaseName(_ conninfo: String) throws -> String {
        try XCTUnwrap(try ConnInfo(conninfo).parsed()["dbname"])
    }

    static var admin: String { TestDatabase.conninfo + " dbname=postgres" }

    /// dw.userprogram_fact exactly as factUpsert creates it, plus a statement trigger
    /// that sleeps before every INSERT so that the merge can be caught in the act.
    static func slowFactTable(sleep seconds: Double, createTable: Bool) -> String {
        (createTable ? """
            CREATE SCHEMA IF NOT EXISTS dw;
            CREATE TABLE dw.userprogram_fact (
                user_id bigint, program_id integer, created_on timestamptz, program_start timestamptz,
                month1date date, month3date date, month5date date, programenddate date, partnerorg_id bigint,
                month1_completed_lessons integer, month1_completed_minutes numeric(12,2),
                month3_completed_lessons integer, month3_completed_minutes numeric(12,2),
                eop_completed_lessons integer, eop_completed_minutes numeric(12,2), start_date date,
                month1_scheduled integer, month3_scheduled integer, eop_scheduled integer,
                _run_id uuid NOT NULL, _updated_at timestamptz NOT NULL, PRIMARY KEY (user_id, program_id));

            """ : "") + """
            CREATE FUNCTION public.slow_write() RETURNS trigger LANGUAGE plpgsql
                AS $$ BEGIN PERFORM pg_sleep(\(seconds)); RETURN NULL; END $$;
            CREATE TRIGGER slow_write BEFORE INSERT ON dw.userprogram_fact
                FOR EACH STATEMENT EXECUTE FUNCTION public.slow_write();
            """
    }

    /// Polls `condition` every few milliseconds until it holds or `timeout` passes.
    @discardableResult
    static func poll(timeout: TimeInterval, interval: TimeInterval = 0.005, _ condition: () throws -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if (try? condition()) == true { return true }
            usleep(UInt32(interval * 1_000_000))
        } while Date() < deadline
        return false
    }

    // MARK: a. the warehouse session terminated mid-write

    func testAWarehouseSessionTerminatedDuringTheMergeIsRetriedAndReadersNeverSeeAPartialTable() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        try TestDatabase.connect(warehouse).execute(Self.slowFactTable(sleep: 0.5, createTable: true))
        // A row from an earlier build makes the write a merge (an empty table is loaded by COPY instead).
        try TestDatabase.connect(warehouse).execute("""
            INSERT INTO dw.userprogram_fact (user_id, program_id, _run_id, _updated_at) VALUES (-1, -1, gen_random_uuid(), now())
            """)
        let pipeline = try load(try Dost.yaml(), source: source, warehouse: warehouse)

        let killer = Self.terminateOnce(database: try Self.databaseName(warehouse),
                                        application: "runner/dost_warehouse/userprogram_fact", queryLike: "%INSERT INTO \"dw\".\"userprogram_fact\"%")
        let counts = RowCountPoller(conninfo: warehouse, table: "dw.userprogram_fact")
        counts.start()
        let report = try await Dost.run(pipeline)
        let killed = killer.stop()
        let seen = counts.stop()

        XCTAssertTrue(killed, "the merge was never seen, so nothing was terminated")
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.stage("userprogram_fact")?.attempts, 2, report.summaryTable)
        let expected = try XCTUnwrap(TestDatabase.connect(warehouse).query("SELECT count(*) FROM dw.userprogram_fact").int(0, 0))
        XCTAssertEqual(report.stage("userprogram_fact")?.written?.inserted, expected,
                       "the first attempt's rows must have been rolled back, so the second inserts them all")
        XCTAssertEqual(report.stage("userprogram_fact")?.written?.deleted, 1, "the earlier build's row")
        XCTAssertGreaterThan(seen.samples, 10, "the reader hardly ran")
        XCTAssertTrue(seen.counts.isSubset(of: [1, expected]),
                      "a reader saw a partial table: row counts \(seen.counts.sorted()) (only 1 and \(expected) are allowed)")
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")
    }

    func testAWarehouseSessionTerminatedDuringTheFirstLoadCopyIsRetriedWithAnExactResult() async throws {
        let rows = 400_000
        let source = try TestDatabase.createDatabase("bulk_src")
        let warehouse = try TestDatabase.createDatabase("bulk_dw")
        let pipeline = try load("""
            pipeline: bulk
            connections:
              source: {url: "${DOST_SOURCE_URL}", read_only: true}
              warehouse: "${DOST_WAREHOUSE_URL}"
            defaults: {warehouse: warehouse, retry: {max_attempts: 3, initial_backoff: 10ms}}
            stages:
              - id: numbers
                type: pgExtract
                config:
                  connection: source
                  query: SELECT g::bigint AS id, md5(g::text) AS label FROM generate_series(1, \(rows)) AS g
                  columns: {id: bigint, label: text}
                  batch_rows: 5000
              - id: bulk_write
                type: factUpsert
                inputs: [numbers]
                config: {from: numbers, connection: warehouse, table: dw.numbers, key: id, columns: {id: bigint, label: text}}
            """, source: source, warehouse: warehouse)
        let killer = Self.terminateOnce(database: try Self.databaseName(warehouse),
                                        application: "runner/bulk/bulk_write", queryLike: "COPY \"dw\".\"numbers\"%")
        let counts = RowCountPoller(conninfo: warehouse, table: "dw.numbers")
        counts.start()
        let report = try await Dost.run(pipeline)
        let killed = killer.stop()
        let seen = counts.stop()

        XCTAssertTrue(killed, "the COPY into the empty table was never seen, so nothing was terminated")
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.stage("bulk_write")?.attempts, 2, report.summaryTable)
        XCTAssertEqual(report.stage("bulk_write")?.written?.inserted, rows, report.summaryTable)
        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try dw.query("SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE label = md5(id::text)) FROM dw.numbers").rows.first,
                       ["\(rows)", "\(rows)", "\(rows)"])
        XCTAssertTrue(seen.counts.isSubset(of: [0, rows]),
                      "a reader saw a partial table: row counts \(seen.counts.sorted()) (only 0 and \(rows) are allowed)")
    }

    // MARK: b. SIGKILL of the runner while it writes

    func testARunnerKilledWhileWritingLeavesThePreviousCompleteStateAndNoLocks() throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let environment = Self.environment(source: source, warehouse: warehouse)
        let database = try Self.databaseName(warehouse)

        let first = try RunnerChild(["run", "dost_warehouse", "--as-of", "2020-06-15"], environment: environment).wait(timeout: 120)
        XCTAssertEqual(first.status, 0, "the first run failed:\n\(first.stdout)\n\(first.stderr.suffix(2000))")
        let dw = try TestDatabase.connect(warehouse)
        try dw.execute(Self.slowFactTable(sleep: 2, createTable: false))

        // --jobs 1 runs userprogram_fact before engagement_metric, so at the kill every
        // as_of-dependent table still holds the earlier run (writes are transactional
        // per table, not per run).
        let doomed = try RunnerChild(["run", "dost_warehouse", "--as-of", "2020-10-15", "--jobs", "1"], environment: environment)
        let admin = try TestDatabase.connect(Self.admin)
        let writing = Self.poll(timeout: 60) {
            try admin.query("""
                SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'runner/dost_warehouse/userprogram_fact'
                  AND state = 'active' AND query LIKE 'WITH merged%'
                """, [database]).rowCount > 0
        }
        XCTAssertTrue(writing, "the fact write was never seen")
        doomed.signal(SIGKILL)
        let killed = doomed.wait(timeout: 10)
        XCTAssertTrue(killed.signalled && killed.status == SIGKILL, "the runner was not killed: \(killed)")

        let lockGone = Self.poll(timeout: 5, interval: 0.05) {
            try admin.query("""
                SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND d.datname = $1
                """, [database]).rowCount == 0
        }
        XCTAssertTrue(lockGone, "an advisory lock outlived the killed runner by 5 s")
        let sessionsGone = Self.poll(timeout: 20, interval: 0.05) {
            try admin.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'runner/%'", [database]).rowCount == 0
        }
        XCTAssertTrue(sessionsGone, "the killed runner's sessions never ended")
        XCTAssertEqual(try TestDatabase.rows(dw, "SELECT status FROM lineage.runs"), ["running", "succeeded"],
                       "the lineage mirror shows the killed run as not completed")
        XCTAssertEqual(try dw.query("SELECT count(*) FROM pg_class WHERE relname LIKE 'pipelinekit_staging%'").int(0, 0), 0,
                       "a staging table was left behind")
        XCTAssertEqual(try TestDatabase.rows(dw, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'dw'"),
                       ["engagement_metric", "partnerorg", "programlist", "userprogram_fact"])
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-06-15")

        try dw.execute("DROP TRIGGER slow_write ON dw.userprogram_fact")
        let next = try RunnerChild(["run", "dost_warehouse", "--as-of", "2020-10-15"], environment: environment).wait(timeout: 120)
        XCTAssertEqual(next.status, 0, "the run after the kill failed:\n\(next.stdout)\n\(next.stderr.suffix(2000))")
        XCTAssertFalse(next.signalled)
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")
    }

    // MARK: c. SIGINT and SIGTERM

    func testSIGINTDuringTheCallsCopyAbortsWithExitStatus130AndWritesNothing() throws {
        try assertSignalAbortsTheRun(SIGINT, name: "SIGINT")
    }

    func testSIGTERMDuringTheCallsCopyAbortsWithExitStatus130AndWritesNothing() throws {
        try assertSignalAbortsTheRun(SIGTERM, name: "SIGTERM")
    }

    func testSIGTERMDuringTheParallelCallsCopyStopsBothStreamsAndWritesNothing() throws {
        // The shipped pipeline reads the calls in two streams; a pause per row keeps both busy.
        let yaml = try Dost.yaml().replacingOccurrences(of: Dost.answeredCallsOnly, with: """
                  where: "call_start_time IS NOT NULL AND pg_sleep(0.002)::text = ''"

            """)
        XCTAssertTrue(yaml.contains("pg_sleep") && yaml.contains("parallel: 2"))
        try assertSignalAbortsTheRun(SIGTERM, name: "SIGTERM", yaml: yaml, copies: 2, copyLike: "COPY%ctid%pg_sleep%")
    }

    /// Sends `signal` once `copies` calls COPYs like `copyLike` are running (slowed by pg_sleep), then
    /// checks the abort: exit 130, the summary, nothing written, no session left running.
    func assertSignalAbortsTheRun(_ signal: Int32, name: String, yaml: String? = nil, copies: Int = 1,
                                  copyLike: String = "COPY%pg_sleep%", file: StaticString = #filePath, line: UInt = #line) throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let path = try temporaryFile(try yaml ?? Dost.yamlWithSlowCalls(pause: 30))
        let child = try RunnerChild(["run", path, "--as-of", "2020-10-15"], environment: Self.environment(source: source, warehouse: warehouse))
        let admin = try TestDatabase.connect(Self.admin)
        let sourceName = try Self.databaseName(source)
        let copying = Self.poll(timeout: 60) {
            try admin.query("""
                SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'runner/dost_warehouse/userprogram'
                  AND state = 'active' AND query LIKE $2
                """, [sourceName, copyLike]).rowCount >= copies
        }
        XCTAssertTrue(copying, "the calls COPY was never seen", file: file, line: line)
        let sent = Date()
        child.signal(signal)
        let outcome = child.wait(timeout: 20)
        XCTAssertFalse(outcome.timedOut, "\(name) did not stop the run within 20 s", file: file, line: line)
        XCTAssertFalse(outcome.signalled, "the runner died of the signal instead of aborting: \(outcome)", file: file, line: line)
        XCTAssertEqual(outcome.status, 130, "exit status after \(name)\n\(outcome.stdout)\n\(outcome.stderr.suffix(1500))", file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(sent), 10, "the 30 s COPY was not interrupted", file: file, line: line)

        let rows = outcome.stdout.split(separator: "\n").map(String.init)
        let stageRow = rows.first { $0.hasPrefix("userprogram ") }
        XCTAssertTrue(stageRow?.contains(" aborted ") ?? false, "summary row for userprogram: \(stageRow ?? "missing")\n\(outcome.stdout)", file: file, line: line)
        for dependent in ["userprogram_fact ", "engagement_metric "] {
            let row = rows.first { $0.hasPrefix(dependent) }
            XCTAssertTrue(row?.contains(" aborted ") ?? false, "summary row: \(row ?? "missing")", file: file, line: line)
        }
        XCTAssertTrue(rows.last?.range(of: #"^run [0-9a-f-]{36} aborted in"#, options: .regularExpression) != nil,
                      "last summary line: \(rows.last ?? "none")", file: file, line: line)
        XCTAssertTrue(outcome.stderr.contains("received \(name)"), "the log does not say why the run stopped", file: file, line: line)

        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try dw.query("SELECT to_regclass('dw.userprogram_fact') IS NULL AND to_regclass('dw.engagement_metric') IS NULL").string(0, 0), "t",
                       "the aborted run wrote fact or metric tables", file: file, line: line)
        let lingering = Self.poll(timeout: 5, interval: 0.05) {
            try admin.query("SELECT 1 FROM pg_stat_activity WHERE datname IN ($1, $2) AND application_name LIKE 'runner/%' AND state <> 'idle'",
                            [sourceName, try Self.databaseName(warehouse)]).rowCount == 0
        }
        XCTAssertTrue(lingering, "a query of the aborted run kept running", file: file, line: line)
    }

    // MARK: d. the warehouse is unreachable

    /// A closed port, with a password that must never be printed.
    static let unreachableWarehouse = "host=127.0.0.1 port=1 dbname=dw user=etl password=s3cret connect_timeout=5"

    func testAnUnreachableWarehouseStopsTheRunAtOnceNamingTheConnectionWithoutItsPassword() throws {
        let source = try Dost.sourceDatabase()
        let outcome = try RunnerChild(["run", "dost_warehouse", "--as-of", "2020-10-15"],
                                      environment: Self.environment(source: source, warehouse: Self.unreachableWarehouse)).wait(timeout: 60)
        XCTAssertFalse(outcome.signalled || outcome.timedOut, "\(outcome)")
        XCTAssertEqual(outcome.status, 1, "the run could not take its lock: exit 1\n\(outcome.stderr)")
        XCTAssertFalse((outcome.stdout + outcome.stderr).contains("s3cret"), "the password was printed:\n\(outcome.stdout)\n\(outcome.stderr)")
        XCTAssertTrue(outcome.stderr.contains("127.0.0.1") && outcome.stderr.contains("port=1"), "the target is not named:\n\(outcome.stderr)")
        XCTAssertTrue(outcome.stderr.contains("warehouse") || outcome.stderr.contains("lock"),
                      "the error names neither the connection ('warehouse') nor what it was for (the run lock):\n\(outcome.stderr)")
        XCTAssertTrue(outcome.stdout.isEmpty, "stages ran although the run could not start:\n\(outcome.stdout)")
    }

    func testAnUnreachableWarehouseWithoutARunLockFailsEachWritingStageAfterRetriesWithBackoff() throws {
        let source = try Dost.sourceDatabase()
        let yaml = try Dost.yaml()
            .replacingOccurrences(of: "  warehouse: warehouse\n", with: "")
            .replacingOccurrences(of: "initial_backoff: 1s", with: "initial_backoff: 200ms")
        XCTAssertFalse(yaml.contains("warehouse: warehouse\n"))
        for url in [Self.unreachableWarehouse, "postgresql://etl:s3cret@127.0.0.1:1/dw?connect_timeout=5"] {
            let path = try temporaryFile(yaml)
            let outcome = try RunnerChild(["run", path, "--as-of", "2020-10-15"],
                                          environment: Self.environment(source: source, warehouse: url)).wait(timeout: 60)
            XCTAssertFalse(outcome.signalled || outcome.timedOut, "\(outcome)")
            XCTAssertEqual(outcome.status, 1, outcome.stdout)
            XCTAssertFalse((outcome.stdout + outcome.stderr).contains("s3cret"), "the password was printed:\n\(outcome.stdout)\n\(outcome.stderr)")
            let rows = outcome.stdout.split(separator: "\n").map(String.init)
            for stage in ["partnerorg", "programlist"] {
                let row = try XCTUnwrap(rows.first { $0.hasPrefix(stage + " ") }, outcome.stdout)
                let cells = row.split(separator: " ", omittingEmptySubsequences: true)
                XCTAssertEqual(cells[2], "failed", row)
                XCTAssertEqual(cells[3], "3", "\(stage) should have used all 3 attempts: \(row)")
                XCTAssertTrue(rows.contains { $0.hasPrefix("\(stage): failed: could not connect with connection 'warehouse': ") && $0.contains("127.0.0.1") },
                              outcome.stdout)
                // Two retries: ≥ 0.2 s·0.8 + 0.4 s·0.8 of backoff with ±20% jitter.
                let seconds = Double(cells.last!.dropLast()) ?? 0
                XCTAssertGreaterThanOrEqual(seconds, 0.45, "\(stage) retried without backing off: \(row)")
            }
            XCTAssertEqual(outcome.stderr.components(separatedBy: "transient failure; retrying").count - 1, 4,
                           "two retries for each of the two writing stages")
            for stage in ["userprogram", "userprogram_fact", "engagement_metric"] {
                XCTAssertTrue(rows.first { $0.hasPrefix(stage + " ") }?.contains(" skipped ") ?? false, outcome.stdout)
            }
        }
    }

    // MARK: e. two runs at once

    func testASecondRunExits3AtOnceNamingTheHolderAndWithWaitItRunsAfterwards() throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let environment = Self.environment(source: source, warehouse: warehouse)
        let path = try temporaryFile(try Dost.yamlWithSlowCalls(pause: 3))
        let database = try Self.databaseName(warehouse)
        let admin = try TestDatabase.connect(Self.admin)

        let holder = try RunnerChild(["run", path, "--as-of", "2020-10-15"], environment: environment)
        var holderRun = ""
        XCTAssertTrue(Self.poll(timeout: 30) {
            let result = try admin.query("""
                SELECT application_name FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'runner/dost_warehouse/lock/%'
                """, [database])
            guard result.rowCount > 0 else { return false }
            holderRun = String(result.string(0, 0)!.split(separator: "/").last!)
            return true
        }, "the first run never took its lock")

        let refused = try RunnerChild(["run", path, "--as-of", "2020-10-15"], environment: environment).wait(timeout: 30)
        XCTAssertEqual(refused.status, 3, "\(refused.stdout)\n\(refused.stderr)")
        XCTAssertFalse(refused.signalled)
        XCTAssertLessThan(refused.seconds, 5, "the refusal should be immediate")
        XCTAssertTrue(refused.stderr.contains("pipelinekit:dost_warehouse"), "the lock is not named:\n\(refused.stderr)")
        XCTAssertTrue(refused.stderr.contains(holderRun), "the holder's run id \(holderRun) is not named:\n\(refused.stderr)")
        XCTAssertTrue(refused.stdout.isEmpty, "the refused run printed a summary:\n\(refused.stdout)")
        XCTAssertTrue(holder.isRunning, "the holder finished before the refusal was checked; lengthen its pause")

        let waiter = try RunnerChild(["run", path, "--as-of", "2020-10-15", "--wait"], environment: environment)
        usleep(500_000)
        XCTAssertTrue(waiter.isRunning, "--wait did not wait")
        let first = holder.wait(timeout: 120)
        let firstEnded = Date()
        XCTAssertEqual(first.status, 0, "\(first.stdout)\n\(first.stderr.suffix(1500))")
        XCTAssertTrue(first.stdout.contains("run \(holderRun) succeeded"), first.stdout)
        let second = waiter.wait(timeout: 120)
        XCTAssertEqual(second.status, 0, "the waiting run failed:\n\(second.stdout)\n\(second.stderr.suffix(1500))")
        XCTAssertGreaterThan(Date().timeIntervalSince(firstEnded), 1, "the waiting run cannot have run its 3 s pause before the holder finished")
        XCTAssertTrue(second.stderr.contains("waiting for the run lock"), second.stderr.suffix(1500).description)
        XCTAssertFalse(second.stdout.contains("run \(holderRun)"), "the waiting run reported the holder's id")
        XCTAssertNotNil(second.stdout.range(of: #"run [0-9a-f-]{36} succeeded"#, options: .regularExpression), second.stdout)
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")
    }
}

// MARK: - helpers

/// What a finished `runner` child left behind.
struct ChildOutcome: CustomStringConvertible {
    /// Exit status, or the signal number when `signalled`.
    var status: Int32
    var signalled: Bool
    var timedOut: Bool
    var seconds: Double
    var stdout: String
    var stderr: String

    var description: String {
        "status \(status)\(signalled ? " (signal)" : "")\(timedOut ? " (timed out)" : "") after \(String(format: "%.1f", seconds))s\nstdout:\n\(stdout)\nstderr:\n\(stderr.suffix(3000))"
    }
}

/// The `runner` executable built with these tests, run as a child process from the
/// repository root, its output captured in files.
final class RunnerChild: @unchecked Sendable {
    private let process = Process()
    private let directory: URL
    let started = Date()

    static func locate() throws -> URL {
        var candidates: [URL] = []
        if let given = ProcessInfo.processInfo.environment["PIPELINEKIT_RUNNER"], !given.isEmpty {
            candidates.append(URL(fileURLWithPath: given))
        }
        for bundle in [Bundle.main] + Bundle.allBundles {
            candidates.append(bundle.bundleURL.appendingPathComponent("runner"))
            candidates.append(bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("runner"))
        }
        for scratch in [".build-faults", ".build"] {
            candidates.append(TestDatabase.repositoryRoot.appendingPathComponent("\(scratch)/debug/runner"))
        }
        var isDirectory: ObjCBool = false
        if let found = candidates.first(where: {
            FileManager.default.fileExists(atPath: $0.path, isDirectory: &isDirectory) && !isDirectory.boolValue
                && FileManager.default.isExecutableFile(atPath: $0.path)
        }) {
            return found
        }
        throw NSError(domain: "RunnerChild", code: 1, userInfo: [NSLocalizedDescriptionKey:
            "no runner executable found (build with `swift build --build-tests`); looked at \(candidates.map(\.path))"])
    }

    init(_ arguments: [String], environment: [String: String]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("runner-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("stdout").path, contents: nil)
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("stderr").path, contents: nil)
        process.executableURL = try Self.locate()
        process.arguments = arguments
        process.environment = environment
        process.currentDirectoryURL = TestDatabase.repositoryRoot
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: directory.appendingPathComponent("stdout"))
        process.standardError = try FileHandle(forWritingTo: directory.appendingPathComponent("stderr"))
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: directory)
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the child; after `timeout` it is killed and reported as timed out.
    @discardableResult
    func wait(timeout: TimeInterval) -> ChildOutcome {
        var timedOut = false
        while process.isRunning {
            if Date().timeIntervalSince(started) > timeout {
                timedOut = true
                kill(pid, SIGKILL)
                break
            }
            usleep(5_000)
        }
        process.waitUntilExit()
        func read(_ name: String) -> String {
            String(decoding: (try? Data(contentsOf: directory.appendingPathComponent(name))) ?? Data(), as: UTF8.self)
        }
        return ChildOutcome(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal && !timedOut,
                            timedOut: timedOut, seconds: Date().timeIntervalSince(started), stdout: read("stdout"), stderr: read("stderr"))
    }
}

/// Runs a statement in a loop on a thread of its own with its own connection, until
/// the body says stop or `stop()` is called. `stop()` returns whether the body stopped it.
final class BackgroundLoop: @unchecked Sendable {
    enum Next { case `continue`, stop }
    private let conninfo: String
    private let lock = NSLock()
    private var cancelled = false
    private var finished = false
    private var succeeded = false
    private let done = DispatchSemaphore(value: 0)

    init(conninfo: String) { self.conninfo = conninfo }

    func start(every interval: TimeInterval = 0.003, _ body: @escaping @Sendable (PGConnection) throws -> Next) {
        let thread = Thread { [self] in
            defer { done.signal() }
            guard let connection = try? TestDatabase.connect(conninfo) else { return }
            while !lock.withLock({ cancelled }) {
                if (try? body(connection)) == .stop {
                    lock.withLock { succeeded = true }
                    return
                }
                usleep(UInt32(interval * 1_000_000))
            }
        }
        thread.start()
    }

    @discardableResult
    func stop() -> Bool {
        lock.withLock { cancelled = true }
        done.wait()
        return lock.withLock { succeeded }
    }
}

/// Counts a table's rows as fast as it can from another session, recording every
/// count it saw (a missing table counts as 0).
final class RowCountPoller: @unchecked Sendable {
    private let loop: BackgroundLoop
    private let table: String
    private let lock = NSLock()
    private var seen: Set<Int> = []
    private var samples = 0

    init(conninfo: String, table: String) {
        loop = BackgroundLoop(conninfo: conninfo)
        self.table = table
    }

    func start() {
        let table = table
        loop.start(every: 0.002) { [self] connection in
            let exists = try connection.query("SELECT to_regclass($1) IS NOT NULL", [table]).string(0, 0) == "t"
            let count = exists ? try connection.query("SELECT count(*) FROM \(table)").int(0, 0) ?? -1 : 0
            lock.withLock {
                seen.insert(count)
                samples += 1
            }
            return .continue
        }
    }

    func stop() -> (counts: Set<Int>, samples: Int) {
        loop.stop()
        return lock.withLock { (seen, samples) }
    }
}
