import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// Reading the source exactly as PostgreSQL holds it: numerics beyond the
/// declared scale or range, text in other encodings, content digests, SQL
/// written as for psql, and connection strings with secrets.
final class SourceReadingTests: XCTestCase {
    private func read(_ conninfo: String, _ sql: String, _ schema: [Field]) throws -> Batch {
        let definitions = ["source": ConnectionDefinition(name: "source", info: ConnInfo(conninfo), readOnly: true)]
        let cancellation = Cancellation()
        let context = ScanContext(connections: ConnectionProvider(pipelineName: "reading", stageID: "scan", definitions: definitions,
                                                                  cancellation: cancellation),
                                  cancellation: cancellation, metrics: StageMetrics())
        return try CopyRelation(connection: "source", sql: sql, schema: schema, batchRows: 100).materialize(context)
    }

    private func extract(_ yaml: String) throws -> PgExtract {
        try UnitFixture.make(PgExtract.self, "e", yaml: yaml, inputs: [:], connections: ["source": true])
    }

    func testANumericBeyond64BitsIsADataErrorNotACrash() throws {
        let database = try TestDatabase.createDatabase("reading")
        XCTAssertThrowsError(try read(database, "SELECT 9223372036854775808::numeric AS n", [Field("n", .numeric(precision: 18, scale: 0))]))
        // The last whole digits fit, the cents tip it over: the overflow is in the fractional digits.
        XCTAssertThrowsError(try read(database, "SELECT 92233720368547758.08::numeric AS n", [Field("n", .numeric(precision: 18, scale: 2))]))
    }

    func testTheLookBackOfKeysNearTheBottomOfBigintStopsThereInsteadOfOverflowing() {
        XCTAssertEqual(PgExtract.lateCondition(key: "id", high: 500, lookback: 100, snapshot: "9:9:"),
                       "id > 400 AND id <= 500 AND age(xmin) <= age((pg_snapshot_xmin('9:9:'::pg_snapshot)::text::bigint % 4294967296)::text::xid)")
        for (high, lookback) in [(Int64(-5), Int64.max), (Int64.min, Int64(100_000))] {
            XCTAssertTrue(PgExtract.lateCondition(key: "id", high: high, lookback: lookback, snapshot: "9:9:").hasPrefix("id <= \(high) AND "))
        }
    }

    func testRowsWhoseTrackingKeyIsNullAreAmongTheChangesOfEveryRun() throws {
        let database = try TestDatabase.createDatabase("reading")
        try TestDatabase.connect(database).execute("""
            CREATE TABLE loose (id bigint, v int); INSERT INTO loose VALUES (1, 10), (2, 20), (NULL, 30), (3, -1);
            """)
        // The last run saw keys up to 2; a NULL key is above no watermark and was never seen by one.
        let sql = PgExtract.changeQuery(columns: "v", table: "public.loose", key: "id", high: 2, late: "", predicate: "v > 0")
        let batch = try read(database, sql, [Field("v", .int)])
        XCTAssertEqual(batch.columns[0].ints.sorted(), [30], "the row with a NULL key, and not the one the predicate drops")
    }

    func testDigitsBeyondTheDeclaredScaleAreRoundedAsAPostgresCastWould() throws {
        let database = try TestDatabase.createDatabase("reading")
        let values = ["1.239", "-1.239", "1.2349", "0.005", "-0.005", "0.0049", "123456.7850001", "0.00001", "9999.995"]
        let source = try TestDatabase.connect(database)
        try source.execute("CREATE TABLE t (i int, n numeric); INSERT INTO t VALUES " +
                           values.enumerated().map { "(\($0.offset), \($0.element))" }.joined(separator: ", "))
        let batch = try read(database, "SELECT n FROM t ORDER BY i", [Field("n", .numeric(precision: 12, scale: 2))])
        let expected = try source.query("SELECT string_agg((n::numeric(12,2) * 100)::bigint::text, ',' ORDER BY i) FROM t").string(0, 0)
        XCTAssertEqual(batch.columns[0].ints.map(String.init).joined(separator: ","), expected)
    }

    func testTextFromALatin1DatabaseArrivesAsTheSameCharacters() throws {
        let name = "reading_latin1_\(UUID().uuidString.prefix(8).lowercased())"
        try TestDatabase.connect(TestDatabase.conninfo + " dbname=postgres")
            .execute("CREATE DATABASE \(name) ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        let database = TestDatabase.conninfo + " dbname=\(name)"
        try TestDatabase.connect(database).execute("CREATE TABLE t (s text); INSERT INTO t VALUES (convert_from('\\xe9'::bytea, 'LATIN1'))")
        XCTAssertEqual(try read(database, "SELECT s FROM t", [Field("s", .text)]).columns[0].texts, ["é"])
    }

    func testTheContentDigestOfAnUntrackedExtractSeesEveryColumnEvenOneNamedQ() throws {
        let database = try TestDatabase.createDatabase("reading")
        let source = try TestDatabase.connect(database)
        try source.execute("CREATE TABLE ref (q int, label text); INSERT INTO ref VALUES (1, 'before')")
        let stage = try extract("{connection: source, table: ref, columns: {q: int, label: text}}")
        let before = try stage.currentWatermark(source)
        try source.execute("UPDATE ref SET label = 'after'")
        XCTAssertNotEqual(try stage.currentWatermark(source), before, "a changed label must change the digest")
    }

    func testAQueryOrWhereWrittenAsForPsqlWithACommentOrSemicolonStillWorks() throws {
        let database = try TestDatabase.createDatabase("reading")
        try TestDatabase.connect(database).execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
        for config in ["query: \"SELECT id FROM t -- all of them\"", "query: \"SELECT id FROM t;  \"",
                       "table: t, where: \"id > 1 -- the later ones\"", "table: t, where: \"id > 1; -- the later ones\"",
                       "query: \"SELECT id FROM t; -- one\\n  -- two\\n\"", "table: t, where: \"id::text <> '--' ;\""] {
            let stage = try extract("{connection: source, \(config), columns: {id: int}}")
            XCTAssertNoThrow(try read(database, stage.selectSQL, [Field("id", .int)]), config)
            XCTAssertNoThrow(try TestDatabase.connect(database).query(stage.selectSQL + " LIMIT 0"), config)
        }
    }

    func testTheRedactedTargetHidesEveryKindOfPassword() {
        let target = ConnInfo("host=db password=pw1 sslpassword=s3cret").redacted
        XCTAssertFalse(target.contains("pw1") || target.contains("s3cret"), target)
        XCTAssertTrue(target.contains("host=db"), target)
    }
}
