import Foundation
import XCTest
@testable import PipelineKit

/// `${NAME}` and `${NAME:-default}` substitution.
final class InterpolationTests: XCTestCase {
    private func substitute(_ text: String, _ values: [String: String]) -> (String, unresolved: [String], malformed: Bool) {
        Interpolation.substitute(text) { values[$0] }
    }

    func testReferenceIsReplacedByItsValue() {
        let result = substitute("host=${HOST} port=${PORT}", ["HOST": "db.local", "PORT": "5433"])
        XCTAssertEqual(result.0, "host=db.local port=5433")
        XCTAssertEqual(result.unresolved, [])
        XCTAssertFalse(result.malformed)
    }

    func testValueIsInsertedVerbatimEvenWhenItLooksLikeAReference() {
        let result = substitute("${A}", ["A": "${B}", "B": "no"])
        XCTAssertEqual(result.0, "${B}", "substitution is not recursive")
    }

    func testDefaultIsUsedWhenTheNameIsUnset() {
        let result = substitute("dbname=${DB:-analytics}", [:])
        XCTAssertEqual(result.0, "dbname=analytics")
        XCTAssertEqual(result.unresolved, [])
    }

    func testSetValueWinsOverTheDefault() {
        XCTAssertEqual(substitute("${DB:-analytics}", ["DB": "prod"]).0, "prod")
    }

    func testDefaultIsUsedWhenTheValueIsEmpty() {
        let result = substitute("[${DB:-analytics}]", ["DB": ""])
        XCTAssertEqual(result.0, "[analytics]")
        XCTAssertEqual(result.unresolved, [])
    }

    func testEmptyValueWithoutDefaultIsInsertedAsEmpty() {
        let result = substitute("[${DB}]", ["DB": ""])
        XCTAssertEqual(result.0, "[]")
        XCTAssertEqual(result.unresolved, [], "an empty value counts as set")
    }

    func testEmptyDefaultIsAllowed() {
        let result = substitute("[${DB:-}]", [:])
        XCTAssertEqual(result.0, "[]")
        XCTAssertEqual(result.unresolved, [])
    }

    func testDefaultMaySpanTheFirstSeparatorOnly() {
        XCTAssertEqual(Interpolation.pieces("${A:-x:-y}"), [.reference(name: "A", fallback: "x:-y")])
        XCTAssertEqual(substitute("${A:-x:-y}", [:]).0, "x:-y")
    }

    func testUnsetNamesWithoutDefaultAreReportedInOrder() {
        let result = substitute("${A}-${B}-${C:-c}-${A}", ["B": "b"])
        XCTAssertEqual(result.unresolved, ["A", "A"])
        XCTAssertEqual(result.0, "-b-c-")
        XCTAssertFalse(result.malformed)
    }

    func testUnclosedReferenceIsMalformed() {
        XCTAssertNil(Interpolation.pieces("host=${HOST"))
        let result = substitute("host=${HOST", ["HOST": "x"])
        XCTAssertTrue(result.malformed)
        XCTAssertEqual(result.0, "host=${HOST", "malformed text is returned unchanged")
        XCTAssertEqual(result.unresolved, [])
    }

    func testUnclosedReferenceAfterAClosedOneIsMalformed() {
        XCTAssertNil(Interpolation.pieces("${A} and ${B"))
        XCTAssertTrue(substitute("${A} and ${B", ["A": "a", "B": "b"]).malformed)
    }

    func testPiecesSplitLiteralsAndReferences() {
        XCTAssertEqual(Interpolation.pieces("a${B}c${D:-e}"), [
            .literal("a"), .reference(name: "B", fallback: nil), .literal("c"), .reference(name: "D", fallback: "e"),
        ])
        XCTAssertEqual(Interpolation.pieces("${X}${Y}"), [
            .reference(name: "X", fallback: nil), .reference(name: "Y", fallback: nil),
        ])
        XCTAssertEqual(Interpolation.pieces(""), [])
    }

    func testDollarWithoutBraceAndLoneBracesAreLiteral() {
        XCTAssertEqual(Interpolation.pieces("cost $5 {x} $"), [.literal("cost $5 {x} $")])
        XCTAssertEqual(substitute("cost $5 {x} $", [:]).0, "cost $5 {x} $")
    }

    func testNonASCIIAroundReferencesIsPreserved() {
        XCTAssertEqual(substitute("café ${A} ✓", ["A": "naïve"]).0, "café naïve ✓")
    }

    // MARK: through the loader

    func testStageConfigIsInterpolatedWithPipelineVariables() throws {
        let text = """
            pipeline: demo
            variables:
              days: {type: int, default: 7}
            stages:
              - id: a
                type: scripted
                config:
                  note: "last ${days} days, from ${as_of}"

            """
        let seven = try loadPipeline(text, registry: testRegistry, options: loadOptions(asOf: CivilDate(year: 2024, month: 1, day: 2)))
        let eight = try loadPipeline(text, registry: testRegistry,
                                     options: loadOptions(overrides: [(name: "days", value: "8")], asOf: CivilDate(year: 2024, month: 1, day: 2)))
        let sameAgain = try loadPipeline(text, registry: testRegistry, options: loadOptions(asOf: CivilDate(year: 2024, month: 1, day: 2)))
        XCTAssertEqual(seven.stages[0].configFingerprint, sameAgain.stages[0].configFingerprint)
        XCTAssertNotEqual(seven.stages[0].configFingerprint, eight.stages[0].configFingerprint,
                          "the fingerprint is of the resolved config")
    }

    func testConnectionsAreInterpolatedFromTheEnvironmentNotFromVariables() throws {
        let text = """
            pipeline: demo
            connections:
              src: "host=${PGHOST_TEST:-/tmp} dbname=${name:-envdefault}"
            variables:
              name: fromvariable
            stages:
              - id: a
                type: noop

            """
        let pipeline = try loadPipeline(text, registry: testRegistry, options: loadOptions(environment: ["PGHOST_TEST": "/var/run"]))
        XCTAssertEqual(pipeline.connections["src"]?.info.raw, "host=/var/run dbname=envdefault")
    }
}
