import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// lookupBuild without `persist` (no PostgreSQL): normalisation, the
/// duplicate-key rules, NULL/empty keys and the default row.
final class LookupBuildTests: XCTestCase {
    typealias F = UnitFixture

    static let partnerFields = [Field("id", .bigint), Field("name", .text), Field("provider_number", .text)]

    /// The `partnerorg` stage of pipelines/dost_warehouse.yaml without `persist`.
    static func partnerYAML(duplicates: String? = "first", orderBy: String? = "id") -> String {
        var yaml = """
            from: partners
            key: provider_number
            normalize: [digits, "last:10"]
            default: {id: 0, name: Direct, provider_number: null}

            """
        if let duplicates { yaml += "duplicates: \(duplicates)\n" }
        if let orderBy { yaml += "order_by: \(orderBy)\n" }
        return yaml
    }

    /// Three spellings of one number, out of id order, plus unusable keys and one other number.
    static let partners: [[Value]] = [
        [.int(30), .text("Thirty"), .text("+91 80 4710 0037")],
        [.int(10), .text("Ten"), .text("08047100037")],
        [.int(20), .text("Twenty"), .text("80-4710-0037")],
        [.int(40), .text("NullKey"), .null],
        [.int(50), .text("EmptyKey"), .text("")],
        [.int(60), .text("NoDigits"), .text("n/a")],
        [.int(70), .text("Other"), .text("9876543210")],
    ]

    func build(_ yaml: String, rows: [[Value]] = LookupBuildTests.partners, fields: [Field] = LookupBuildTests.partnerFields,
               from: String = "partners", file: StaticString = #filePath, line: UInt = #line) throws -> (Lookup, StageMetrics) {
        let stage = try F.make(LookupBuild.self, "partnerorg", yaml: yaml, inputs: [from: .relation], file: file, line: line)
        let metrics = StageMetrics()
        let output = try stage.run(F.context(stageID: "partnerorg", inputs: [from: F.relation(fields, rows)], metrics: metrics))
        return (try F.lookup(of: output), metrics)
    }

    func name(_ lookup: Lookup, _ raw: Value) -> Value {
        lookup.value(lookup.schema.firstIndex { $0.name == "name" }!, forRaw: [raw])
    }

    func testDigitsAndLastTenMakeThreeSpellingsOneKey() throws {
        let (lookup, _) = try build(Self.partnerYAML())
        for spelling in ["+91 80 4710 0037", "08047100037", "80-4710-0037", "8047100037", "(0) 80 4710 0037"] {
            XCTAssertEqual(lookup.positions(forRaw: [.text(spelling)]), [1], spelling)
            XCTAssertEqual(name(lookup, .text(spelling)), .text("Ten"), spelling)
        }
        XCTAssertEqual(name(lookup, .text("98765 43210")), .text("Other"))
    }

    func testDuplicatesFirstKeepsTheLowestOrderByAndLastTheHighest() throws {
        let (first, firstMetrics) = try build(Self.partnerYAML(duplicates: "first"))
        XCTAssertEqual(name(first, .text("+91 80 4710 0037")), .text("Ten"))
        XCTAssertEqual(firstMetrics.excluded["duplicate_key"], 2)

        let (last, lastMetrics) = try build(Self.partnerYAML(duplicates: "last"))
        XCTAssertEqual(name(last, .text("+91 80 4710 0037")), .text("Thirty"))
        XCTAssertEqual(last.positions(forRaw: [.text("08047100037")]), [0])
        XCTAssertEqual(lastMetrics.excluded["duplicate_key"], 2)
    }

    func testDuplicatesFirstAndLastOrderNumericallyNotTextually() throws {
        let rows: [[Value]] = [
            [.int(9), .text("Nine"), .text("1234567890")],
            [.int(100), .text("Hundred"), .text("1234567890")],
            [.int(-5), .text("MinusFive"), .text("1234567890")],
        ]
        let (first, _) = try build(Self.partnerYAML(duplicates: "first"), rows: rows)
        XCTAssertEqual(name(first, .text("1234567890")), .text("MinusFive"))
        let (last, _) = try build(Self.partnerYAML(duplicates: "last"), rows: rows)
        XCTAssertEqual(name(last, .text("1234567890")), .text("Hundred"))
    }

    func testDuplicatesErrorThrowsADataErrorNamingTheKey() throws {
        let rows = Array(Self.partners[0..<3]) + [Self.partners[6]]
        for yaml in [Self.partnerYAML(duplicates: "error", orderBy: nil), Self.partnerYAML(duplicates: nil, orderBy: nil)] {
            XCTAssertThrowsError(try build(yaml, rows: rows), yaml) { error in
                guard case StageFailure.data(let message) = error else {
                    return XCTFail("expected a data error, got \(error)")
                }
                XCTAssertTrue(message.contains("share the key 8047100037"), message)
                XCTAssertTrue(message.hasPrefix("3 rows of 'partners'"), message)
                XCTAssertTrue(message.contains("(rows 1, 2, 3)"), message)
            }
        }
    }

    func testDuplicatesAllKeepsEveryRowInInputOrder() throws {
        let yaml = """
            from: lesson_days
            key: program_id
            duplicates: all
            """
        let fields = [Field("program_id", .int), Field("day_offset", .int)]
        let rows: [[Value]] = [[.int(10), .int(6)], [.int(11), .int(0)], [.int(10), .int(0)], [.int(10), .int(6)], [.int(10), .null]]
        let (lookup, metrics) = try build(yaml, rows: rows, fields: fields, from: "lesson_days")
        XCTAssertEqual(lookup.positions(forRaw: [.int(10)]), [0, 2, 3, 4])
        XCTAssertEqual(lookup.positions(forRaw: [.int(11)]), [1])
        XCTAssertEqual(lookup.positions(forRaw: [.int(12)]), [])
        XCTAssertEqual(lookup.value(1, forRaw: [.int(12)]), .null, "no default row: a miss is NULL")
        XCTAssertEqual(metrics.excluded, [:])
        XCTAssertEqual(metrics.rowsOut, 5)
    }

    func testAnIntegerKeyFollowsTheSameRulesForDuplicatesAndNulls() throws {
        let fields = [Field("id", .bigint), Field("version", .int), Field("name", .text)]
        let rows: [[Value]] = [
            [.int(7), .int(2), .text("Seven v2")], [.int(8), .int(1), .text("Eight")],
            [.int(7), .int(3), .text("Seven v3")], [.null, .int(1), .text("NoKey")], [.int(7), .int(1), .text("Seven v1")],
        ]
        func yaml(_ duplicates: String) -> String { "from: users\nkey: id\nduplicates: \(duplicates)\norder_by: version\n" }

        let (first, metrics) = try build(yaml("first"), rows: rows, fields: fields, from: "users")
        XCTAssertTrue(first.isKeyedByInt)
        XCTAssertEqual(name(first, .int(7)), .text("Seven v1"))
        XCTAssertEqual(first.firstPosition(forInt: 7), 4)
        XCTAssertEqual(first.positions(forRaw: [.int(8)]), [1])
        XCTAssertEqual(first.positions(forRaw: [.null]), [])
        XCTAssertEqual(metrics.excluded, ["duplicate_key": 2, "null_or_empty_key": 1])

        let (last, _) = try build(yaml("last"), rows: rows, fields: fields, from: "users")
        XCTAssertEqual(last.positions(forRaw: [.int(7)]), [2])
        let (all, _) = try build(yaml("all"), rows: rows, fields: fields, from: "users")
        XCTAssertEqual(all.positions(forRaw: [.int(7)]), [0, 2, 4])
        XCTAssertEqual(all.firstPosition(forInt: 7), 0)

        XCTAssertThrowsError(try build(yaml("error"), rows: rows, fields: fields, from: "users")) { error in
            guard case StageFailure.data(let message) = error else { return XCTFail("expected a data error, got \(error)") }
            XCTAssertTrue(message.hasPrefix("3 rows of 'users' share the key 7 (rows 1, 3, 5)"), message)
        }
    }

    func testNullAndEmptyNormalisedKeysAreCountedAndNeverMatch() throws {
        let (lookup, metrics) = try build(Self.partnerYAML())
        XCTAssertEqual(metrics.excluded["null_or_empty_key"], 3, "NULL, '' and 'n/a' (no digits)")
        for raw: Value in [.null, .text(""), .text("n/a"), .text("---")] {
            XCTAssertEqual(lookup.positions(forRaw: [raw]), [], "\(raw)")
            XCTAssertEqual(name(lookup, raw), .text("Direct"), "\(raw) gets the default row")
        }
        XCTAssertEqual(lookup.rows.count, 7, "the lookup keeps every input row")
    }

    func testTheDefaultRowIsReturnedForMissesWithTypedValues() throws {
        let (lookup, _) = try build(Self.partnerYAML())
        XCTAssertEqual(lookup.defaultRow, [.int(0), .text("Direct"), .null])
        let miss: [Value] = [.text("5555555555")]
        XCTAssertEqual(lookup.positions(forRaw: miss), [])
        XCTAssertEqual(lookup.value(0, forRaw: miss), .int(0))
        XCTAssertEqual(lookup.value(1, forRaw: miss), .text("Direct"))
        XCTAssertEqual(lookup.value(2, forRaw: miss), .null)
        XCTAssertEqual(lookup.value(0, forRaw: [.text("9876543210")]), .int(70), "a hit is not the default")
    }

    func testADefaultThatDoesNotFitItsColumnIsAConfigurationError() throws {
        let notANumber = Self.partnerYAML().replacingOccurrences(of: "{id: 0,", with: "{id: zero,")
        XCTAssertThrowsError(try build(notANumber)) { error in
            guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("'zero' is not a valid bigint"), message)
        }
        let unknownColumn = Self.partnerYAML().replacingOccurrences(of: "{id: 0,", with: "{id: 0, region: north,")
        XCTAssertThrowsError(try build(unknownColumn)) { error in
            guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("'region'"), message)
        }
    }

    func testADefaultForABooleanColumnAcceptsTrueAndFalse() throws {
        // bool is a declarable column type (stored as 0/1); YAML true/false should make a default.
        let yaml = """
            from: flags
            key: id
            default: {id: 0, active: false, verified: true}
            """
        let fields = [Field("id", .bigint), Field("active", .bool), Field("verified", .bool)]
        let (lookup, _) = try build(yaml, rows: [[.int(1), .int(1), .int(0)]], fields: fields, from: "flags")
        XCTAssertEqual(lookup.defaultRow, [.int(0), .int(0), .int(1)])
    }

    func testAPersistedDefaultRowWithoutAValueForTheTablesKeyIsRejectedWhenBuilt() throws {
        let yaml = """
            from: partners
            key: provider_number
            default: {name: Unknown}
            persist: {connection: warehouse, table: dw.partnerorg, key: id}
            """
        let (build, sink) = F.build("partnerorg", inputs: ["partners": .relation], connections: ["warehouse": false])
        XCTAssertThrowsError(try LookupBuild(config: try F.config(yaml), build: build))
        XCTAssertEqual(sink.diagnostics.map(\.message), [
            "stage 'partnerorg': the default row is also written to dw.partnerorg, but it has no value for the table's key 'id'; give it one, or set persist.include_default: false",
        ])
        // Not written, it needs no key.
        _ = try F.make(LookupBuild.self, "partnerorg", yaml: yaml.replacingOccurrences(of: "key: id}", with: "key: id, include_default: false}"),
                       inputs: ["partners": .relation], connections: ["warehouse": false])
    }

    func testFirstOrLastWithoutOrderByIsRejectedWhenBuilt() throws {
        let (build, sink) = F.build("partnerorg", inputs: ["partners": .relation])
        XCTAssertThrowsError(try LookupBuild(config: try F.config(Self.partnerYAML(duplicates: "first", orderBy: nil)), build: build))
        XCTAssertEqual(sink.diagnostics.count, 1)
        XCTAssertTrue(sink.diagnostics.first?.message.contains("needs 'order_by'") ?? false, "\(sink.diagnostics)")
    }

    func testTwoColumnKeysMatchOnBothColumns() throws {
        let yaml = """
            from: pairs
            key: [a, b]
            normalize: [trim, lower]
            """
        let fields = [Field("a", .int), Field("b", .text), Field("v", .text)]
        let rows: [[Value]] = [[.int(1), .text(" X "), .text("one-x")], [.int(1), .text("y"), .text("one-y")],
                               [.int(2), .text("x"), .text("two-x")]]
        let (lookup, _) = try build(yaml, rows: rows, fields: fields, from: "pairs")
        XCTAssertEqual(lookup.value(2, forRaw: [.int(1), .text("x")]), .text("one-x"))
        XCTAssertEqual(lookup.value(2, forRaw: [.int(2), .text("X")]), .text("two-x"))
        XCTAssertEqual(lookup.positions(forRaw: [.int(2), .text("y")]), [])
        XCTAssertEqual(lookup.positions(forRaw: [.null, .text("y")]), [])
    }
}

/// Values written in pipeline files are typed by the column they go into.
final class LiteralValueTests: XCTestCase {
    func testDatesTimestampsAndNumericsParseExactly() {
        XCTAssertEqual(DataType.date.value(fromText: "2000-01-02"), .int(1))
        XCTAssertEqual(DataType.date.value(fromText: "1999-12-31"), .int(-1))
        XCTAssertEqual(DataType.date.value(fromText: "infinity"), .int(Int64(Int32.max)))
        XCTAssertNil(DataType.date.value(fromText: "2020-02-30"))
        XCTAssertEqual(DataType.timestamptz.value(fromText: "2000-01-01T00:00:01Z"), .int(1_000_000))
        XCTAssertEqual(DataType.timestamptz.value(fromText: "2000-01-01 05:30:00+05:30"), .int(0))
        XCTAssertNil(DataType.timestamptz.value(fromText: "yesterday"))
        XCTAssertNil(DataType.timestamptz.value(fromText: "999999-01-01T00:00:00Z"), "beyond PostgreSQL's timestamps, not a crash")
        XCTAssertNil(DataType.timestamptz.value(fromText: "294277-01-05T00:00:00Z"), "just beyond PostgreSQL's last timestamp")
        let money = DataType.numeric(precision: 12, scale: 2)
        XCTAssertEqual(money.value(fromText: "1.5"), .int(150))
        XCTAssertEqual(money.value(fromText: "-0.05"), .int(-5))
        XCTAssertEqual(money.value(fromText: "42"), .int(4200))
        XCTAssertNil(money.value(fromText: "1.234"), "more places than the scale")
        XCTAssertNil(money.value(fromText: "1e3"))
        XCTAssertNil(money.value(fromText: "12345678901.00"), "more digits than the precision allows")
        XCTAssertEqual(DataType.bool.value(fromText: "TRUE"), .int(1))
        XCTAssertNil(DataType.int.value(fromText: "4.0"))
    }
}
