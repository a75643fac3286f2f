import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// Faults and hostile input against a real PostgreSQL: each test would fail
/// without the guarantee it names.
final class ReliabilityTests: XCTestCase {
    /// Writes a variant of a pipeline to a temporary file and loads it.
    func load(_ yaml: String, source: String, warehouse: String, asOf: String = "2020-10-15") throws -> PipelineDefinition {
        try Dost.loadPipeline(yaml: yaml, source: source, warehouse: warehouse, asOf: asOf)
    }

    static let header = """
        pipeline: hostile
        connections:
          source: {url: "${DOST_SOURCE_URL}", read_only: true}
          warehouse: {url: "${DOST_WAREHOUSE_URL}"}
        defaults: {warehouse: warehouse, retry: {max_attempts: 2, initial_backoff: 10ms}}
        stages:

        """

    func testASourceConnectionTerminatedMidCopyIsRetriedAndTheResultIsExact() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        // The pause keeps the COPY open long enough to be terminated from outside.
        let yaml = try Dost.yamlWithSlowCalls(pause: 0.4)
        let pipeline = try load(yaml, source: source, warehouse: warehouse)
        let killer = try TestDatabase.connect(TestDatabase.conninfo + " dbname=postgres")
        let terminated = Task.detached { () -> Bool in
            for _ in 0..<2000 {
                let result = try? killer.query("""
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE application_name = 'runner/dost_warehouse/userprogram' AND query LIKE 'COPY%pg_sleep%'
                    """)
                if (result?.rowCount ?? 0) > 0 { return true }
                try? await Task.sleep(nanoseconds: 5_000_000)
            }
            return false
        }
        let report = try await Dost.run(pipeline)
        let killed = await terminated.value
        XCTAssertTrue(killed, "the COPY was never seen, so nothing was terminated")
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.stage("userprogram")?.attempts, 2)
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")
    }

    func testAnExtractThatTriesToWriteFailsAndLeavesTheSourceUnchanged() async throws {
        let source = try Dost.sourceDatabase()
        try TestDatabase.connect(source).execute("DROP SEQUENCE IF EXISTS probe_seq; CREATE SEQUENCE probe_seq")
        let probe = "SELECT is_called::text FROM probe_seq"
        let pipeline = try load(Self.header + """
              - id: sneaky
                type: pgExtract
                config:
                  connection: source
                  query: SELECT nextval('probe_seq') AS id
                  columns: {id: bigint}
              - id: read
                type: lookupBuild
                inputs: [sneaky]
                config: {from: sneaky, key: id}
            """, source: source, warehouse: try TestDatabase.createDatabase("dw"))
        let report = try await Dost.run(pipeline)
        XCTAssertEqual(report.status, .failed)
        // The rows flow when the consumer scans the extract: that is where the write is refused.
        XCTAssertEqual(report.stage("read")?.sqlState, "25006")
        XCTAssertEqual(report.stage("read")?.attempts, 1, "a read-only violation is permanent")
        XCTAssertTrue(report.stage("read")?.error?.contains("read-only") ?? false, report.summaryTable)
        XCTAssertEqual(try TestDatabase.connect(source).query(probe).string(0, 0), "false", "the sequence was advanced")
    }

    func testADeclaredColumnTypeThatDoesNotMatchTheSourceIsAClearError() async throws {
        let pipeline = try load(Self.header + """
              - id: users
                type: pgExtract
                config: {connection: source, table: users, columns: {id: int, created_on: timestamptz}}
            """, source: try Dost.sourceDatabase(), warehouse: try TestDatabase.createDatabase("dw"))
        let report = try await Dost.run(pipeline)
        XCTAssertEqual(report.status, .failed)
        let error = try XCTUnwrap(report.stage("users")?.error)
        XCTAssertTrue(error.contains("column 'id' is bigint in the source but declared int"), error)
    }

    func testATableNameFromYAMLCannotInjectSQL() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dw")
        let hostile = #"x"; DROP TABLE users; --"#
        let pipeline = try load(Self.header + """
              - id: users
                type: pgExtract
                config: {connection: source, table: users, columns: {id: bigint}}
              - id: copy
                type: factUpsert
                inputs: [users]
                config:
                  from: users
                  connection: warehouse
                  table: 'dw.\(hostile)'
                  key: id
                  columns: {id: bigint}
            """, source: source, warehouse: warehouse)
        let report = try await Dost.run(pipeline)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try dw.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'dw' AND tablename = $1", [hostile]).int(0, 0), 1)
        XCTAssertGreaterThan(try TestDatabase.connect(source).query("SELECT count(*) FROM users").int(0, 0) ?? 0, 0)
    }

    func testASecondRunOfTheSamePipelineIsRefusedNamingTheHolder() async throws {
        let warehouse = try TestDatabase.createDatabase("dw")
        let holderRun = UUID().uuidString.lowercased()
        let holder = try PGConnection(ConnInfo(warehouse), applicationName: "runner/dost_warehouse/lock/\(holderRun)")
        try holder.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", ["pipelinekit:dost_warehouse"])
        let pipeline = try Dost.loadPipeline(source: try Dost.sourceDatabase(), warehouse: warehouse, asOf: "2020-10-15")
        do {
            _ = try await Dost.run(pipeline)
            XCTFail("the run started although another run held the lock")
        } catch let error as RunLockHeld {
            XCTAssertEqual(error.holderRunID, holderRun)
            XCTAssertTrue(error.description.contains("pipelinekit:dost_warehouse"), error.description)
        }
        let tables = try TestDatabase.connect(warehouse).query("SELECT count(*) FROM pg_tables WHERE schemaname = 'dw'").int(0, 0)
        XCTAssertEqual(tables, 0, "the refused run wrote nothing")
    }

    /// An executor that will wait (`--wait`) for the run lock, which another session holds.
    private func executorWaitingForAHeldLock() throws -> (PipelineExecutor, holder: PGConnection) {
        let warehouse = try TestDatabase.createDatabase("dw")
        let holder = try PGConnection(ConnInfo(warehouse), applicationName: "runner/dost_warehouse/lock/other")
        try holder.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", ["pipelinekit:dost_warehouse"])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let pipeline = try Dost.loadPipeline(source: try Dost.sourceDatabase(), warehouse: warehouse, asOf: "2020-10-15")
        let executor = try PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 1, waitForLock: true, logger: logger,
                                                                                    sleep: { _ in }))
        return (executor, holder)
    }

    func testARunInterruptedWhileWaitingForTheLockEndsAsAborted() async throws {
        let (executor, holder) = try executorWaitingForAHeldLock()
        Task.detached {
            try? await Task.sleep(nanoseconds: 1_000_000_000)
            executor.cancel(reason: "received SIGINT")
        }
        let started = Date()
        let report = try await executor.run()
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "the lock wait was not interrupted")
        XCTAssertEqual(report.status, .aborted)
        XCTAssertTrue(report.stages.allSatisfy { $0.status == .aborted }, report.summaryTable)
        _ = holder
    }

    /// The sessions opened while the run takes its lock may have been cut off
    /// while it waited for another run's: it hands out none of them after.
    func testSessionsOpenedWhileTheRunWaitedForTheLockAreNotUsedAfterTheWait() async throws {
        let (executor, holder) = try executorWaitingForAHeldLock()
        let watcher = try TestDatabase.connect(TestDatabase.conninfo + " dbname=postgres")
        let sessions = { (name: String) throws -> Set<String> in
            Set(try watcher.query("SELECT pid::text FROM pg_stat_activity WHERE application_name = $1", [name]).rows.compactMap { $0[0] })
        }
        let run = Task { try await executor.run() }
        var opened: Set<String> = []
        let deadline = Date().addingTimeInterval(20)
        while opened.count < 3 && Date() < deadline {  // the warehouse's and two of the source's
            opened = try sessions("runner/dost_warehouse/refresh")
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(opened.count, 3, "the sessions the refresh decision needs first were not opened during the wait")
        try holder.execute("SELECT pg_advisory_unlock_all()")
        // A stage that takes a session names it after itself.
        var reused: [String] = []
        while true {
            let rows = try watcher.query("SELECT pid::text, application_name FROM pg_stat_activity WHERE pid::text = ANY ($1::text[])",
                                         ["{\(opened.joined(separator: ","))}"]).rows
            reused += rows.filter { $0[1] != "runner/dost_warehouse/refresh" }.compactMap { $0[1] }
            if rows.isEmpty || !reused.isEmpty { break }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        let report = try await run.value
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(reused, [], "sessions opened before the wait served stages after it")
    }

    func testARunCancelledBeforeItReachesTheLockWaitDoesNotWaitForTheHolder() async throws {
        let (executor, holder) = try executorWaitingForAHeldLock()
        // The signal arrives while the run is still connecting: nothing is running to interrupt yet.
        executor.cancel(reason: "received SIGINT")
        Task.detached {
            try? await Task.sleep(nanoseconds: 8_000_000_000)
            _ = try? holder.execute("SELECT pg_advisory_unlock_all()")
        }
        let started = Date()
        let report = try await executor.run()
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "the cancelled run waited for the other run's lock")
        XCTAssertEqual(report.status, .aborted)
    }

    func testCancellingARunInterruptsRunningQueriesAndWritesNothing() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let yaml = try Dost.yamlWithSlowCalls(pause: 30)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let executor = try PipelineExecutor(pipeline: try load(yaml, source: source, warehouse: warehouse),
                                            options: RunOptions(jobs: 2, logger: logger, sleep: { _ in }))
        let started = Date()
        Task.detached {
            try? await Task.sleep(nanoseconds: 1_500_000_000)
            executor.cancel(reason: "received SIGINT")
        }
        let report = try await executor.run()
        XCTAssertLessThan(Date().timeIntervalSince(started), 20, "the 30 s query was not interrupted")
        XCTAssertEqual(report.status, .aborted, report.summaryTable)
        XCTAssertEqual(report.stage("userprogram")?.status, .aborted)
        XCTAssertEqual(report.stage("userprogram")?.attempts, 1, "an abort is not retried")
        XCTAssertNotEqual(report.stage("userprogram_fact")?.status, .succeeded)
        let facts = try TestDatabase.connect(warehouse).query("SELECT to_regclass('dw.userprogram_fact') IS NULL").string(0, 0)
        XCTAssertEqual(facts, "t", "no fact table was written by the aborted run")
        let active = try TestDatabase.connect(source).query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'runner/%' AND state <> 'idle'").int(0, 0)
        XCTAssertEqual(active, 0, "a query outlived the abort")
    }

    func testDuplicateKeysInAWriteFailTheStageNamingTheKeyAndWriteNothing() async throws {
        let warehouse = try TestDatabase.createDatabase("dw")
        let pipeline = try load(Self.header + """
              - id: experiences
                type: pgExtract
                config: {connection: source, table: experience, columns: {user_id: bigint, program_id: int}}
              - id: by_user
                type: factUpsert
                inputs: [experiences]
                config: {from: experiences, connection: warehouse, table: dw.by_user, key: user_id, columns: {user_id: bigint, program_id: int}}
            """, source: try Dost.sourceDatabase(), warehouse: warehouse)
        let report = try await Dost.run(pipeline)
        XCTAssertEqual(report.status, .failed)
        XCTAssertEqual(report.stage("by_user")?.attempts, 1, "bad data is not retried")
        let error = try XCTUnwrap(report.stage("by_user")?.error)
        XCTAssertTrue(error.contains("rows for the key (user_id)=(") && error.contains("the key must be unique"), error)
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT count(*) FROM dw.by_user").int(0, 0), 0)
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT count(*) FROM lineage.dataset_writes").int(0, 0), 0,
                       "no lineage claims a write that rolled back")
    }

    func testARunWhoseLockSessionEndsCommitsNoFurtherWriteAndSaysWhy() async throws {
        let source = try Dost.sourceDatabase()
        let warehouse = try TestDatabase.createDatabase("dost_dw")
        let pipeline = try load(try Dost.yamlWithSlowCalls(pause: 3), source: source, warehouse: warehouse)
        let run = Task { try await Dost.run(pipeline) }
        // While the calls are read (the lookups are written by then), an administrator ends the lock's session.
        let observer = try TestDatabase.connect(source)
        var reading = false
        for _ in 0..<300 where !reading {
            reading = try observer.query("""
                SELECT count(*) FROM pg_stat_activity
                WHERE application_name LIKE 'runner/%/userprogram' AND state = 'active' AND datname = current_database()
                """).int(0, 0) ?? 0 > 0
            if !reading { try await Task.sleep(nanoseconds: 20_000_000) }
        }
        XCTAssertTrue(reading, "the calls were never read")
        let terminated = try TestDatabase.connect(warehouse).query("""
            SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
            WHERE application_name LIKE 'runner/%/lock/%' AND datname = current_database()
            """).int(0, 0)
        XCTAssertEqual(terminated, 1)
        let report = try await run.value
        XCTAssertEqual(report.status, .failed, report.summaryTable)
        let fact = try XCTUnwrap(report.stage("userprogram_fact"))
        XCTAssertEqual(fact.status, .failed, report.summaryTable)
        XCTAssertEqual(fact.attempts, 1, "a lost lock is not retried")
        XCTAssertTrue(fact.error?.contains("the run lost its lock 'pipelinekit:dost_warehouse'") ?? false, fact.error ?? "")
        let rows = try TestDatabase.connect(warehouse).query("SELECT count(*) FROM dw.userprogram_fact").int(0, 0)
        XCTAssertEqual(rows, 0, "a write committed without the lock")
    }

    func testAStageWaitingForAnotherSessionsLockSaysWhoHoldsItAndGoesOnOnceItIsReleased() async throws {
        try await assertALockWaitIsReported(tracked: false, stage: "events")
    }

    func testTheRefreshDecisionWaitingForALockIsReportedToo() async throws {
        try await assertALockWaitIsReported(tracked: true, stage: "refresh")
    }

    /// Table `events` of the source copied to dw.events in the warehouse.
    func eventsCopy(source: String, warehouse: String, tracked: Bool) throws -> PipelineDefinition {
        try load(Self.header + """
              - id: events
                type: pgExtract
                config: {connection: source, table: public.events, columns: {id: bigint, v: int}\(tracked ? ", incremental: {tracking_key: id}" : "")}
              - id: copied
                type: factUpsert
                inputs: [events]
                config: {from: events, connection: warehouse, table: dw.events, key: id, columns: {id: bigint, v: int}}
            """, source: source, warehouse: warehouse)
    }

    /// Another session holds the source table while a run starts: the run
    /// waits, says who it waits for, and succeeds once the lock is released.
    private func assertALockWaitIsReported(tracked: Bool, stage: String) async throws {
        let source = try TestDatabase.createDatabase("locked_src")
        let warehouse = try TestDatabase.createDatabase("locked_dw")
        let holder = try TestDatabase.connect(source)
        try holder.execute("CREATE TABLE events (id bigint PRIMARY KEY, v int); INSERT INTO events SELECT g, g FROM generate_series(1, 10) g")
        try holder.execute("SET application_name = 'nightly-reload'; BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        let holderPID = try holder.query("SELECT pg_backend_pid()").int(0, 0) ?? 0
        let pipeline = try eventsCopy(source: source, warehouse: warehouse, tracked: tracked)
        let log = CapturedLog()
        var logger = Logger(label: "test") { _ in log.handler() }
        logger.logLevel = .warning
        let executor = try PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 2, logger: logger, sleep: { _ in },
                                                                                    reportLockWaitsAfter: 0.3))
        let run = Task { try await executor.run() }
        let deadline = Date().addingTimeInterval(30)
        while !log.messages.contains(where: { $0.contains("blocked by") }) && Date() < deadline {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        try holder.execute("ROLLBACK")
        let report = try await run.value
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        let warning = try XCTUnwrap(log.messages.first { $0.contains("blocked by") }, "no lock wait was reported: \(log.messages)")
        for part in ["AccessShareLock on events", "pid \(holderPID) (holds a lock on it", "application 'nightly-reload'", "idle in transaction",
                     "connection 'source'", "[stage=\(stage)]"] {
            XCTAssertTrue(warning.contains(part), "'\(part)' missing from: \(warning)")
        }
    }
}

extension ReliabilityTests {
    func testARunOfAPipelineWithoutTrackedExtractsSaysItIsAFullRefreshAndWhy() async throws {
        let source = try TestDatabase.createDatabase("untracked_src")
        let warehouse = try TestDatabase.createDatabase("untracked_dw")
        try TestDatabase.connect(source).execute("CREATE TABLE events (id bigint PRIMARY KEY, v int); INSERT INTO events VALUES (1, 1)")
        let pipeline = try eventsCopy(source: source, warehouse: warehouse, tracked: false)
        let report = try await PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 2, logger: Logger(label: "test"))).run()
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.refresh, "full refresh: no extract is tracked (incremental: on a pgExtract), so every run reads everything")
        XCTAssertTrue(report.summaryTable.contains(report.refresh ?? "-"), report.summaryTable)
    }

    func testEveryLogLineOfARunCarriesItsRunIDFromTheLockToTheRefreshDecision() async throws {
        let source = try TestDatabase.createDatabase("tagged_src")
        let warehouse = try TestDatabase.createDatabase("tagged_dw")
        try TestDatabase.connect(source).execute("CREATE TABLE events (id bigint PRIMARY KEY, v int); INSERT INTO events VALUES (1, 1)")
        let pipeline = try eventsCopy(source: source, warehouse: warehouse, tracked: true)
        let log = CapturedLog()
        let logger = Logger(label: "test") { _ in log.handler() }
        for _ in 0..<2 {
            let report = try await PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 2, logger: logger)).run()
            XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        }
        XCTAssertTrue(log.messages.contains { $0.hasPrefix("full refresh: no earlier run") }, "\(log.messages)")
        XCTAssertTrue(log.messages.contains { $0.hasPrefix("incremental since run") }, "\(log.messages)")
        XCTAssertEqual(log.untagged, [], "lines without the run id")
    }
}

/// Log lines of a run, as `message [stage=...][schedules=...][from=...]`:
/// `Logger(label:) { _ in log.handler() }`.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    private var withoutRun: [String] = []

    var messages: [String] { lock.withLock { lines } }
    /// The messages of lines that carry no run id.
    var untagged: [String] { lock.withLock { withoutRun } }

    /// A handler of its own per logger, as a logger's metadata is its handler's.
    func handler() -> some LogHandler { Handler(log: self) }

    fileprivate func record(_ text: String, message: String, tagged: Bool) {
        lock.withLock {
            lines.append(text)
            if !tagged { withoutRun.append(message) }
        }
    }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            let shown = ["stage", "schedules", "from"]
            let text = "\(event.message) " + all.filter { shown.contains($0.key) }.sorted { $0.key > $1.key }
                .map { "[\($0.key)=\($0.value)]" }.joined()
            log.record(text, message: "\(event.message)", tagged: all["run"] != nil)
        }
    }
}
