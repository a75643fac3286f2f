import Foundation
import PipelineKit
@testable import Stages
import XCTest

/// `parallel: N` reads a table as N COPY streams over ranges of its blocks,
/// in one shared snapshot: the same rows as one COPY, each exactly once.
final class ParallelExtractTests: XCTestCase {
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

    func testTheBlockRangesOfTheStreamsMeetAndTheLastIsOpenEnded() {
        let split = CopyRelation.BlockSplit(table: "public.events", columns: "\"id\"", predicate: "v > 1", streams: 3)
        XCTAssertEqual((0..<3).map { split.select(stream: $0, blocks: 100) }, [
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid < '(33,0)'::tid AND (v > 1)",
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid >= '(33,0)'::tid AND ctid < '(66,0)'::tid AND (v > 1)",
            "SELECT \"id\" FROM \"public\".\"events\" WHERE ctid >= '(66,0)'::tid AND (v > 1)",
        ])
    }
}
