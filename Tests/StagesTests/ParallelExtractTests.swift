import Foundation
import PipelineKit
@testable import Stages
import XCTest

/// `parallel: N` reads a table as N COPY streams over ranges of its blocks,
/// in one shared snapshot: the same rows as one COPY, each exactly once.
final class ParallelExtractTests: XCTestCase {
    typealias F = UnitFixture

    private func pipeline(parallel: Int, where predicate: String) -> String {
        """
        pipeline: parallel
        connections:
          source: {url: "${DOST_SOURCE_URL}", read_only: true}
          warehouse: {url: "${DOST_WAREHOUSE_URL}"}
        defaults: {warehouse: warehouse, retry: {max_attempts: 1}}
        stages:
          - id: events
            type: pgExtract
            config:
              connection: source
              table: public.events
              columns: {id: bigint, v: int, note: text}
              where: \(predicate)
              parallel: \(parallel)
          - id: copied
            type: factUpsert
            inputs: [events]
            config: {from: events, connection: warehouse, table: dw.events, key: id, columns: {id: bigint, v: int, note: text}}
        """
    }

    /// A source table of `rows` rows over many blocks.
    private func source(rows: Int) throws -> String {
        let source = try TestDatabase.createDatabase("parallel_src")
        try TestDatabase.connect(source).execute("""
            CREATE TABLE events (id bigserial PRIMARY KEY, v int, note text);
            INSERT INTO events (v, note) SELECT g % 100, repeat('x', g % 50) FROM generate_series(1, \(rows)) g;
            """)
        return source
    }

    private func digest(_ conninfo: String, _ table: String, where predicate: String = "true") throws -> String {
        try TestDatabase.connect(conninfo).query("""
            SELECT count(*) || ':' || md5(string_agg(id || '|' || v || '|' || note, ',' ORDER BY id)) FROM \(table) WHERE \(predicate)
            """).string(0, 0) ?? ""
    }

    func testThreeStreamsReadEveryRowThePredicateKeepsExactlyOnce() async throws {
        let source = try source(rows: 30_000)
        let blocks = try TestDatabase.connect(source).query("SELECT pg_relation_size('events') / 8192").int(0, 0) ?? 0
        XCTAssertGreaterThan(blocks, 30, "the table must span enough blocks to be divided")
        let warehouse = try TestDatabase.createDatabase("parallel_dw")
        let report = try await Dost.run(try Dost.loadPipeline(yaml: pipeline(parallel: 3, where: "v % 7 <> 0"), source: source, warehouse: warehouse))
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(try digest(warehouse, "dw.events"), try digest(source, "events", where: "v % 7 <> 0"))
    }

    func testTheStreamsRunAtOnceEachOverItsOwnBlockRange() throws {
        let source = try source(rows: 30_000)
        let definitions = ["source": ConnectionDefinition(name: "source", info: ConnInfo(source), readOnly: true)]
        let cancellation = Cancellation()
        let context = ScanContext(connections: ConnectionProvider(pipelineName: "parallel", stageID: "scan", definitions: definitions,
                                                                  cancellation: cancellation),
                                  cancellation: cancellation, metrics: StageMetrics())
        // A pause per row keeps every stream busy while the first batches arrive.
        let predicate = "pg_sleep(0.0002)::text = ''"
        let relation = CopyRelation(connection: "source", sql: "SELECT \"id\" FROM \"public\".\"events\" WHERE \(predicate)",
                                    schema: [Field("id", .bigint)], batchRows: 500,
                                    split: .init(table: "public.events", columns: "\"id\"", predicate: predicate, streams: 3))
        let observer = try TestDatabase.connect(source)
        var busyStreams = 0, ids: [Int64] = []
        try relation.scan(context) { batch in
            if busyStreams == 0 {
                busyStreams = try observer.query("""
                    SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
                      AND query LIKE 'COPY (SELECT "id" FROM "public"."events" WHERE %ctid%'
                    """).int(0, 0) ?? 0
            }
            ids += batch.columns[0].ints
        }
        XCTAssertEqual(busyStreams, 3, "the three block ranges are read at the same time")
        XCTAssertEqual(ids.sorted(), Array(1...30_000), "every row once")
    }

    func testATableOfFewerBlocksThanStreamsIsReadByOneCopy() async throws {
        let source = try source(rows: 3)
        let warehouse = try TestDatabase.createDatabase("parallel_dw")
        let report = try await Dost.run(try Dost.loadPipeline(yaml: pipeline(parallel: 4, where: "true"), source: source, warehouse: warehouse))
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(try digest(warehouse, "dw.events"), try digest(source, "events"))
    }

    func testAViewHasNoBlocksToDivideAndIsReadByOneCopy() async throws {
        let source = try source(rows: 30_000)
        try TestDatabase.connect(source).execute("CREATE VIEW recent AS SELECT * FROM events WHERE id > 100")
        let warehouse = try TestDatabase.createDatabase("parallel_dw")
        let yaml = pipeline(parallel: 3, where: "true").replacingOccurrences(of: "table: public.events\n", with: "table: public.recent\n")
        let report = try await Dost.run(try Dost.loadPipeline(yaml: yaml, source: source, warehouse: warehouse))
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(try digest(warehouse, "dw.events"), try digest(source, "events", where: "id > 100"))
    }

    func testAStreamThatFailsFailsTheStageWithTheServerErrorAndStopsTheOthers() async throws {
        let source = try source(rows: 30_000)
        let warehouse = try TestDatabase.createDatabase("parallel_dw")
        // Only rows in the last third of the table divide by zero.
        let report = try await Dost.run(try Dost.loadPipeline(yaml: pipeline(parallel: 3, where: "CASE WHEN id > 25000 THEN 1 / (id - id) ELSE 1 END = 1"),
                                                 source: source, warehouse: warehouse))
        XCTAssertEqual(report.status, .failed, report.summaryTable)
        XCTAssertTrue(report.stage("copied")?.error?.contains("division by zero") ?? false, report.summaryTable)
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT to_regclass('dw.events') IS NULL OR NOT EXISTS (SELECT 1 FROM dw.events)").string(0, 0), "t",
                       "nothing was written")
        let active = try TestDatabase.connect(source).query("""
            SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'runner/%' AND state <> 'idle'
            """).int(0, 0)
        XCTAssertEqual(active, 0, "a stream outlived the failure")
    }

    func testParallelOnAQueryIsRejectedAtItsLine() throws {
        let yaml = pipeline(parallel: 2, where: "true")
            .replacingOccurrences(of: "      table: public.events\n", with: "      query: SELECT id, v, note FROM events\n")
            .replacingOccurrences(of: "      where: true\n", with: "")
        XCTAssertTrue(yaml.contains("query:") && !yaml.contains("where:"))
        XCTAssertThrowsError(try Dost.loadPipeline(yaml: yaml, source: "dbname=unused", warehouse: "dbname=unused")) { error in
            let message = String(describing: error)
            XCTAssertTrue(message.contains("'parallel' divides a 'table' by its blocks"), message)
            XCTAssertTrue(message.contains(":13:"), "the line of 'parallel': \(message)")
        }
    }

    // MARK: TRUNCATE, which is not MVCC-safe

    private func scanContext(_ source: String) -> ScanContext {
        let definitions = ["source": ConnectionDefinition(name: "source", info: ConnInfo(source), readOnly: true)]
        let cancellation = Cancellation()
        return ScanContext(connections: ConnectionProvider(pipelineName: "parallel", stageID: "scan", definitions: definitions,
                                                           cancellation: cancellation),
                           cancellation: cancellation, metrics: StageMetrics())
    }

    /// The read of events by `streams` COPYs, as pgExtract sets it up for a table.
    private func eventsRead(streams: Int) -> CopyRelation {
        var relation = CopyRelation(connection: "source", sql: "SELECT \"id\" FROM \"public\".\"events\"",
                                    schema: [Field("id", .bigint)], batchRows: 1_000, lockTable: "public.events")
        if streams > 1 { relation.split = .init(table: "public.events", columns: "\"id\"", predicate: nil, streams: streams) }
        return relation
    }

    /// Waits until a session of the runner waits for a lock on the source.
    private func waitForLockWait(_ observer: PGConnection) throws {
        for _ in 0..<200 {
            let waiting = try observer.query("""
                SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                  AND application_name LIKE 'runner/%'
                """).int(0, 0) ?? 0
            if waiting > 0 { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("the read never waited for the lock")
    }

    /// A reload (TRUNCATE and INSERT in one transaction) that commits while
    /// a read waits for the table: the read must see the reloaded rows. A
    /// snapshot taken before the lock sees the new, empty file with none of
    /// the new rows visible: an empty table, which no transaction committed.
    private func assertAReloadCommittingDuringTheReadIsReadWhole(streams: Int) throws {
        let source = try source(rows: 30_000)
        let reload = try TestDatabase.connect(source)
        try reload.execute("""
            BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; TRUNCATE events;
            INSERT INTO events (v, note) SELECT g, 'reloaded' FROM generate_series(1, 20000) g;
            """)
        let relation = eventsRead(streams: streams), context = scanContext(source)
        let read = Task.detached { () throws -> Int in
            var rows = 0
            try relation.scan(context) { rows += $0.count }
            return rows
        }
        try waitForLockWait(try TestDatabase.connect(source))
        try reload.execute("COMMIT")
        let rows = try awaitResult(read)
        XCTAssertEqual(rows, 20_000, "\(streams) stream(s) read \(rows) rows of a table that always held 30000 or 20000")
    }

    private func awaitResult<T: Sendable>(_ task: Task<T, Error>) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task { box.result = await task.result; done.signal() }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "the read hung")
        return try box.result!.get()
    }

    private final class ResultBox<T>: @unchecked Sendable { var result: Result<T, Error>? }

    func testAReloadThatCommitsWhileOneCopyWaitsForTheTableIsReadWhole() throws {
        try assertAReloadCommittingDuringTheReadIsReadWhole(streams: 1)
    }

    func testAReloadThatCommitsWhileParallelStreamsWaitForTheTableIsReadWhole() throws {
        try assertAReloadCommittingDuringTheReadIsReadWhole(streams: 3)
    }

    func testAStreamGivesWayToATruncateQueuedBehindItsCoordinatorInsteadOfWaitingForEver() throws {
        let source = try source(rows: 100)
        // The coordinator holds ACCESS SHARE; a TRUNCATE queues behind it.
        let coordinator = try TestDatabase.connect(source)
        try coordinator.execute("BEGIN; LOCK TABLE events IN ACCESS SHARE MODE")
        let truncate = Task.detached {
            let session = try TestDatabase.connect(source)
            try session.execute("SET application_name = 'runner/truncate'")
            try session.execute("TRUNCATE events")
        }
        try waitForLockWait(try TestDatabase.connect(source))
        let stream = try TestDatabase.connect(source)
        try stream.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        XCTAssertThrowsError(try CopyRelation.lockBesideCoordinator("public.events", stream)) { error in
            XCTAssertTrue(RetryPolicy.isTransient(error), "retried, not a failure: \(error)")
            XCTAssertTrue(String(describing: error).contains("exclusive lock on public.events"), "\(error)")
        }
        try coordinator.execute("ROLLBACK")
        _ = try awaitResult(truncate)
    }

    /// A windowAggregate starts its change queries, then reads the anchor
    /// whole. A change query still waiting for the stage to take its rows
    /// would keep its table locked; a TRUNCATE queued behind it would hold up
    /// the stage's read, and nobody would move again.
    func testChangesReadAheadByAWindowAggregateReleaseTheirTableBeforeTheStageTakesThem() throws {
        let source = try source(rows: 2_000)
        let context = ScanContext(
            connections: ConnectionProvider(pipelineName: "unit", stageID: "changes", definitions: [
                "source": ConnectionDefinition(name: "source", info: ConnInfo(source), readOnly: true)], cancellation: Cancellation()),
            cancellation: Cancellation(), metrics: StageMetrics())
        // 200 batches, far more than a bounded read-ahead holds, sent over about a second (so the lock is seen).
        let changes = CopyRelation(connection: "source", sql: "SELECT id FROM public.events WHERE pg_sleep(0.0005) IS NOT NULL",
                                   schema: [Field("id", .bigint)], batchRows: 10, lockTable: "public.events")
        let prefetched = ChangedGroups.Inputs.prefetch(changes, context: context)
        let truncate = try TestDatabase.connect(source)
        try waitForTheReadsLock(on: "events", observer: truncate)
        try truncate.execute("SET lock_timeout = '10s'")
        XCTAssertNoThrow(try truncate.execute("BEGIN; TRUNCATE events; ROLLBACK"), "the change query kept its lock")
        XCTAssertEqual(try prefetched.materialize(context).count, 2_000)
    }

    private func waitForTheReadsLock(on table: String, observer: PGConnection) throws {
        for _ in 0..<200 {
            let held = try observer.query("""
                SELECT count(*) FROM pg_locks WHERE relation = '\(table)'::regclass AND granted AND pid <> pg_backend_pid()
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """).int(0, 0) ?? 0
            if held > 0 { return }
            Thread.sleep(forTimeInterval: 0.01)
        }
        XCTFail("the read never locked \(table)")
    }

    /// The relation pgExtract makes for `from` (a `table:` or `query:` line), read as `conninfo`.
    private func extracted(_ from: String, parallel: Int = 1, as conninfo: String) throws -> (CopyRelation, StageContext) {
        let yaml = "connection: source\n\(from)\ncolumns: {id: bigint}" + (parallel > 1 ? "\nparallel: \(parallel)" : "")
        let stage = try F.make(PgExtract.self, "events", yaml: yaml, inputs: [:], connections: ["source": true])
        let context = F.context(stageID: "events", inputs: [:], connections: [
            "source": ConnectionDefinition(name: "source", info: ConnInfo(conninfo), readOnly: true)])
        guard case .relation(let relation) = try stage.run(context), let copy = relation as? CopyRelation else {
            throw StageFailure.config("pgExtract made no COPY relation")
        }
        return (copy, context)
    }

    func testPgExtractLocksPlainTablesOnly() throws {
        let source = try source(rows: 10)
        try TestDatabase.connect(source).execute("""
            CREATE VIEW events_view AS SELECT * FROM events; CREATE MATERIALIZED VIEW events_copy AS SELECT * FROM events;
            CREATE TABLE parted (id bigint) PARTITION BY RANGE (id); CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
            """)
        XCTAssertEqual(try extracted("table: public.events", as: source).0.lockTable, "public.events")
        for from in ["table: public.events_view", "table: public.events_copy", "table: public.parted", "query: SELECT id FROM events"] {
            XCTAssertNil(try extracted(from, as: source).0.lockTable, from)
        }
    }

    /// Such a reader cannot name blocks either (ctid needs SELECT on the whole table): it gets one COPY.
    func testAReaderGrantedOnlyTheColumnsItReadsReadsThemWithoutTheLockAndInOneCopy() throws {
        let source = try source(rows: 30_000)
        let role = "reader_\(UUID().uuidString.prefix(8).lowercased())"
        // LOCK TABLE needs SELECT on the whole table; reading the columns needs it on them alone.
        try TestDatabase.connect(source).execute("CREATE ROLE \(role) LOGIN; GRANT SELECT (id, v) ON events TO \(role)")
        for parallel in [1, 3] {
            let (relation, context) = try extracted("table: public.events", parallel: parallel, as: source + " user=\(role)")
            XCTAssertNil(relation.lockTable)
            var rows = 0
            try relation.scan(context.scan) { rows += $0.count }
            XCTAssertEqual(rows, 30_000, "parallel \(parallel)")
        }
    }

    func testTheBlockRangesOfTheStreamsMeetAndTheLastIsOpenEnded() {
        let split = CopyRelation.BlockSplit(table: "public.events", columns: "\"id\"", predicate: "v > 1", streams: 3)
        XCTAssertEqual((0..<3).map { split.select(stream: $0, blocks: 100) }, [
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid < '(33,0)'::tid AND (v > 1)",
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid >= '(33,0)'::tid AND ctid < '(66,0)'::tid AND (v > 1)",
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid >= '(66,0)'::tid AND (v > 1)",
        ])
    }
}
