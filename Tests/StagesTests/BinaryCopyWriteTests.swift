import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// Warehouse writes travel as binary COPY: every value must arrive exactly as
/// PostgreSQL would have read its text form, and a value the column cannot
/// hold must fail naming the column instead of being truncated.
final class BinaryCopyWriteTests: XCTestCase {
    typealias F = UnitFixture

    /// Writes one column of `values` (keyed by row number) and reads it back as PostgreSQL's text.
    private func roundTrip(_ type: DataType, _ values: [Value]) throws -> [String] {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let fields = [Field("id", .bigint), Field("v", type)]
        var batch = Batch(schema: fields)
        for (row, value) in values.enumerated() { batch.append(row: [.int(Int64(row)), value]) }
        let writer = TableWriter(table: "dw.values", columns: fields, key: ["id"])
        _ = try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(batch) }
        try connection.execute("SET TIME ZONE 'UTC'")
        return try connection.query("SELECT coalesce(v::text, 'NULL') FROM dw.values ORDER BY id")
            .rows.map { $0[0] ?? "" }
    }

    func testNumericsKeepEveryDigitAtEveryScale() throws {
        XCTAssertEqual(try roundTrip(.numeric(precision: 12, scale: 2),
                                     [.int(0), .int(5), .int(-5), .int(12345), .int(-12345), .int(100), .int(-100),
                                      .int(99), .int(-1), .int(1_000_000), .int(100_000_000_00), .null]),
                       ["0.00", "0.05", "-0.05", "123.45", "-123.45", "1.00", "-1.00", "0.99", "-0.01", "10000.00",
                        "100000000.00", "NULL"])
        XCTAssertEqual(try roundTrip(.numeric(precision: 12, scale: 0), [.int(-7), .int(0), .int(10_000), .int(123_456_789)]),
                       ["-7", "0", "10000", "123456789"])
        XCTAssertEqual(try roundTrip(.numeric(precision: 18, scale: 4), [.int(1), .int(-123_456), .int(10_000)]),
                       ["0.0001", "-12.3456", "1.0000"])
        XCTAssertEqual(try roundTrip(.numeric(precision: 18, scale: 5), [.int(1), .int(-123_456_789)]),
                       ["0.00001", "-1234.56789"])
        XCTAssertEqual(try roundTrip(.numeric(precision: 18, scale: 18), [.int(999_999_999_999_999_999), .int(-1)]),
                       ["0.999999999999999999", "-0.000000000000000001"])
        XCTAssertEqual(try roundTrip(.numeric(precision: 18, scale: 0), [.int(-999_999_999_999_999_999)]),
                       ["-999999999999999999"])
    }

    func testIntegersAtTheirLimitsBooleansAndNulls() throws {
        XCTAssertEqual(try roundTrip(.bigint, [.int(-42), .int(Int64.max), .int(Int64.min), .null]),
                       ["-42", "9223372036854775807", "-9223372036854775808", "NULL"])
        XCTAssertEqual(try roundTrip(.int, [.int(0), .int(Int64(Int32.max)), .int(Int64(Int32.min))]),
                       ["0", "2147483647", "-2147483648"])
        XCTAssertEqual(try roundTrip(.smallint, [.int(-32768), .int(32767)]), ["-32768", "32767"])
        XCTAssertEqual(try roundTrip(.bool, [.int(1), .int(0), .null]), ["true", "false", "NULL"])
        XCTAssertEqual(try roundTrip(.double, [.double(0.1), .double(-2.5e300), .null]), ["0.1", "-2.5e+300", "NULL"])
    }

    func testTextArrivesByteForByteWithoutEscaping() throws {
        let texts = ["plain", "a\tb", "a\nb", "a\\b", "line1\r\nline2", "\\N", "", "दोस्त é 🙂"]
        XCTAssertEqual(try roundTrip(.text, texts.map(Value.text) + [.null]), texts + ["NULL"])
    }

    func testDatesAndTimestampsIncludingInfinity() throws {
        XCTAssertEqual(try roundTrip(.date, [.int(0), .int(-1), .int(F.day(2020, 2, 29)), .int(F.day(1969, 7, 20)),
                                             .int(PGTime.infiniteDate), .int(PGTime.minusInfiniteDate)]),
                       ["2000-01-01", "1999-12-31", "2020-02-29", "1969-07-20", "infinity", "-infinity"])
        XCTAssertEqual(try roundTrip(.timestamptz, [.int(F.micros(2021, 3, 4, 5, 6, 7, micro: 89)), .int(-1),
                                                    .int(Int64.max), .int(Int64.min), .null]),
                       ["2021-03-04 05:06:07.000089+00", "1999-12-31 23:59:59.999999+00", "infinity", "-infinity", "NULL"])
    }

    func testAValueTooLargeForItsColumnFailsNamingTheColumnAndWritesNothing() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let fields = [Field("id", .bigint), Field("lessons", .int)]
        let writer = TableWriter(table: "dw.narrow", columns: fields, key: ["id"])
        var batch = Batch(schema: fields)
        batch.append(row: [.int(1), .int(7)])
        batch.append(row: [.int(2), .int(3_000_000_000)])
        XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(batch) }) { error in
            XCTAssertTrue("\(error)".contains("3000000000 is out of range for column 'lessons' (int)"), "\(error)")
        }
        XCTAssertEqual(try connection.query("SELECT count(*) FROM dw.narrow").int(0, 0), 0)
    }

    func testANumericBeyondItsPrecisionFailsNamingTheColumnAndTheFix() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let fields = [Field("id", .bigint), Field("minutes", .numeric(precision: 4, scale: 2))]
        let writer = TableWriter(table: "dw.minutes", columns: fields, key: ["id"])
        var batch = Batch(schema: fields)
        batch.append(row: [.int(1), .int(9_999)])     // 99.99: the largest that fits
        batch.append(row: [.int(2), .int(-12_345)])   // -123.45
        XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(batch) }) { error in
            XCTAssertEqual("\(error)", "data: value -123.45 is out of range for column 'minutes' (numeric(4,2): at most 2 digits before the point); declare a larger precision for it (at most 18)")
        }
        XCTAssertEqual(try connection.query("SELECT count(*) FROM dw.minutes").int(0, 0), 0)
        XCTAssertEqual(CopyBinaryEncoder.decimal(5, scale: 2), "0.05")
        XCTAssertEqual(CopyBinaryEncoder.decimal(120, scale: 0), "120")
    }

    func testAColumnStoredUnlikeTheTableTypeIsAConfigurationError() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let writer = TableWriter(table: "dw.mismatch", columns: [Field("id", .bigint), Field("name", .int)], key: ["id"])
        var batch = Batch(schema: [Field("id", .bigint), Field("name", .text)])
        batch.append(row: [.int(1), .text("x")])
        XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(batch) }) { error in
            XCTAssertTrue("\(error)".contains("column 'name' holds text values, which cannot be written to a int column"), "\(error)")
        }
    }

    func testAFirstLoadStampsEveryRowWithTheRunAndTheTransactionTime() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let fields = [Field("id", .bigint)]
        let writer = TableWriter(table: "dw.stamped", columns: fields, key: ["id"])
        var batch = Batch(schema: fields)
        (1...3).forEach { batch.append(row: [.int($0)]) }
        let runID = UUID()
        let before = try connection.query("SELECT clock_timestamp()").string(0, 0)!
        let counts = try writer.write(connection, runID: runID, deleteMissing: true) { try $0(batch) }
        XCTAssertEqual(counts, WriteCounts(inserted: 3))
        let stamps = try connection.query("""
            SELECT count(DISTINCT _run_id), min(_run_id::text), count(DISTINCT _updated_at),
                   bool_and(_updated_at >= $1::timestamptz AND _updated_at <= clock_timestamp()) FROM dw.stamped
            """, [before])
        XCTAssertEqual(stamps.rows.first, ["1", runID.uuidString.lowercased(), "1", "t"])
    }

    /// A table of key columns only, the case where a merge has nothing to update.
    func testRepeatedKeysFailNamingTheKeyWhetherTheTableWasEmptyOrNot() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        let fields = [Field("user_id", .bigint), Field("program_id", .int)]
        let writer = TableWriter(table: "dw.keyed", columns: fields, key: ["user_id", "program_id"])
        var repeated = Batch(schema: fields)
        [(1, 1), (2, 1), (2, 1)].forEach { repeated.append(row: [.int($0.0), .int($0.1)]) }
        for tableHadRows in [false, true] {
            XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(repeated) }) { error in
                XCTAssertTrue("\(error)".contains("rows for the key (user_id, program_id)=(2, 1) of dw.keyed; the key must be unique"),
                              "table had rows: \(tableHadRows): \(error)")
            }
            XCTAssertEqual(try connection.query("SELECT count(*) FROM dw.keyed").int(0, 0), tableHadRows ? 1 : 0, "nothing was written")
            var one = Batch(schema: fields)
            one.append(row: [.int(9), .int(9)])
            if !tableHadRows { _ = try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(one) } }
        }
    }

    func testAKeyStagedTwiceFailsEvenWhenItsFirstCopyEqualsTheTablesRow() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        for fields in [[Field("id", .bigint), Field("v", .int)], [Field("id", .bigint)]] {
            let table = "dw.t\(fields.count)"
            let writer = TableWriter(table: table, columns: fields, key: ["id"])
            let row: [Value] = fields.count == 2 ? [.int(1), .int(10)] : [.int(1)]
            _ = try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(F.batch(fields, [row])) }
            // The first copy changes nothing, so the merge alone would only lock the row and let the second through.
            let second: [Value] = fields.count == 2 ? [.int(1), .int(20)] : [.int(1)]
            XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) {
                try $0(F.batch(fields, [row, second]))
            }) { error in
                XCTAssertTrue("\(error)".contains("2 rows for the key (id)=(1) of \(table); the key must be unique"), "\(error)")
            }
            XCTAssertEqual(try connection.query("SELECT count(*) FROM \(table)").int(0, 0), 1)
        }
        XCTAssertEqual(try connection.query("SELECT v FROM dw.t2").int(0, 0), 10, "the table kept its row")
    }

    func testAnExistingTableWithAnotherKeyOrAnUndeclaredRequiredColumnIsAConfigurationError() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        try connection.execute("""
            CREATE SCHEMA dw;
            CREATE TABLE dw.other_key (id bigint, program_id int, v int, _run_id uuid NOT NULL, _updated_at timestamptz NOT NULL,
                                       PRIMARY KEY (id, program_id));
            CREATE TABLE dw.required (id bigint PRIMARY KEY, v int, note text NOT NULL, _run_id uuid NOT NULL,
                                      _updated_at timestamptz NOT NULL);
            """)
        let cases: [(table: String, fields: [Field], expected: String)] = [
            ("dw.other_key", [Field("id", .bigint), Field("program_id", .int), Field("v", .int)],
             "no primary key or unique index on exactly (id)"),
            ("dw.required", [Field("id", .bigint), Field("v", .int)], "column note is NOT NULL without a default but not declared"),
        ]
        for (table, fields, expected) in cases {
            let writer = TableWriter(table: table, columns: fields, key: ["id"])
            XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) {
                try $0(F.batch(fields, [fields.map { _ in .int(1) }]))
            }) { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(table): \(error)") }
                XCTAssertTrue(message.contains("table \(table) does not match the declaration: \(expected)"), message)
            }
            XCTAssertEqual(try connection.query("SELECT count(*) FROM \(table)").int(0, 0), 0, "\(table): nothing written")
        }
    }

    func testAnUndeclaredIdentityOrGeneratedColumnFillsItselfAndIsAccepted() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("binary_copy"))
        try connection.execute("""
            CREATE SCHEMA dw;
            CREATE TABLE dw.filled (id bigint PRIMARY KEY, v int, serial bigint NOT NULL GENERATED ALWAYS AS IDENTITY,
                                    twice int NOT NULL GENERATED ALWAYS AS (coalesce(v, 0) * 2) STORED,
                                    _run_id uuid NOT NULL, _updated_at timestamptz NOT NULL);
            """)
        let fields = [Field("id", .bigint), Field("v", .int)]
        let writer = TableWriter(table: "dw.filled", columns: fields, key: ["id"])
        _ = try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(F.batch(fields, [[.int(1), .int(21)]])) }
        XCTAssertEqual(try connection.query("SELECT twice FROM dw.filled").int(0, 0), 42)
    }

    func testAFactColumnDeclaredAsAnotherKindOfValueIsRefusedBeforeWriting() throws {
        // All stored as Int64, but an integer is not a date, a time or a boolean.
        let cases: [(DataType, DataType)] = [(.int, .date), (.bigint, .timestamptz), (.int, .bool), (.date, .int),
                                             (.numeric(precision: 12, scale: 2), .int)]
        for (input, declared) in cases {
            let stage = try F.make(FactUpsert.self, "fact", yaml: """
                from: src
                columns: {id: bigint, v: \(declared.sqlName)}
                connection: warehouse
                table: dw.f
                key: id
                """, inputs: ["src": .relation], connections: ["warehouse": false])
            let context = F.context(stageID: "fact", inputs: ["src": F.relation([Field("id", .bigint), Field("v", input)], [[.int(1), .int(20200115)]])])
            XCTAssertThrowsError(try stage.run(context), "\(input) → \(declared)") { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, "column 'v' is \(input) in 'src' but declared \(declared) for dw.f")
            }
        }
        XCTAssertTrue(DataType.int.canBeWritten(as: .bigint) && DataType.bigint.canBeWritten(as: .numeric(precision: 18, scale: 0)))
    }

    func testTheDecoderReadsBackWhatTheEncoderWritesEvenPastItsInitialCapacity() throws {
        let fields = [Field("id", .bigint), Field("name", .text), Field("score", .double), Field("day", .date)]
        var batch = Batch(schema: fields)
        for row in 0..<5 {
            batch.append(row: [.int(Int64(row)), row == 2 ? .null : .text("n\t\(row)"), row == 3 ? .null : .double(Double(row) / 4),
                               .int(Int64(row * 100))])
        }
        var encoder = try CopyBinaryEncoder(columns: batch.columns, types: fields.map(\.type))
        var decoder = BinaryCopyDecoder(schema: fields, capacity: 2)
        for row in 0..<batch.count {
            try encoder.append(row: row)
            let message = (row == 0 ? CopyBinaryEncoder.header : []) + encoder.takeBytes()
            try message.withUnsafeBytes { try decoder.decode($0) }
        }
        let decoded = decoder.takeBatch()
        XCTAssertEqual((0..<decoded.count).map(decoded.row), (0..<batch.count).map(batch.row))
        XCTAssertEqual(decoder.takeBatch().count, 0, "a taken batch starts the next one empty")
    }
}
