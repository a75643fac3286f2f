import Foundation
@testable import PipelineKit
import XCTest

/// KeyNormalization: the steps lookupBuild applies to text keys.
final class KeyNormalizationTests: XCTestCase {
    func normalise(_ words: [String], _ text: String) -> Value? {
        let steps = words.map { KeyNormalization.parse($0)! }
        return KeyNormalization(steps: steps).apply([.text(text)])?.first
    }

    func testParseAcceptsTheDocumentedWords() {
        XCTAssertEqual(KeyNormalization.parse("digits"), .digits)
        XCTAssertEqual(KeyNormalization.parse("trim"), .trim)
        XCTAssertEqual(KeyNormalization.parse("lower"), .lower)
        XCTAssertEqual(KeyNormalization.parse("upper"), .upper)
        XCTAssertEqual(KeyNormalization.parse("last:10"), .last(10))
        XCTAssertEqual(KeyNormalization.parse("first:3"), .first(3))
    }

    func testParseRejectsEverythingElse() {
        for word in ["", "Digits", "last", "last:", "last:0", "last:-1", "last:x", "last:10:2", "middle:3", "first:1.5"] {
            XCTAssertNil(KeyNormalization.parse(word), "'\(word)'")
        }
    }

    func testPhoneNumbersReduceToTheirLastTenDigits() {
        let steps = ["digits", "last:10"]
        XCTAssertEqual(normalise(steps, "+91 80 4710 0037"), .text("8047100037"))
        XCTAssertEqual(normalise(steps, "08047100037"), .text("8047100037"))
        XCTAssertEqual(normalise(steps, "80-4710-0037"), .text("8047100037"))
        XCTAssertEqual(normalise(steps, "4710 0037"), .text("47100037"), "shorter numbers are kept whole")
    }

    func testDigitsKeepsOnlyASCIIDigits() {
        XCTAssertEqual(normalise(["digits"], "a1b2-c3 ４٥"), .text("123"), "full-width and Arabic-Indic digits are dropped")
    }

    func testStepsApplyInOrder() {
        XCTAssertEqual(normalise(["last:4", "digits"], "12-34"), .text("234"))
        XCTAssertEqual(normalise(["digits", "last:4"], "12-34"), .text("1234"))
        XCTAssertEqual(normalise(["trim", "first:3"], "  abcdef "), .text("abc"))
        XCTAssertEqual(normalise(["first:3", "trim"], "  abcdef "), .text("a"))
        XCTAssertEqual(normalise(["trim", "upper"], "\t MiXed \n"), .text("MIXED"))
        XCTAssertEqual(normalise(["lower"], "MiXed"), .text("mixed"))
    }

    func testNullOrEmptyAfterNormalisationNeverMakesAKey() {
        let phone = KeyNormalization(steps: [.digits, .last(10)])
        XCTAssertNil(phone.apply([.null]))
        XCTAssertNil(phone.apply([.text("")]))
        XCTAssertNil(phone.apply([.text("n/a")]))
        XCTAssertNil(phone.apply([.int(1), .null]), "one NULL part voids a two-part key")
        XCTAssertNil(KeyNormalization(steps: [.trim]).apply([.text("   ")]))
        XCTAssertNil(KeyNormalization.none.apply([.null]))
    }

    func testNonTextValuesAreUntouched() {
        let phone = KeyNormalization(steps: [.digits, .last(2)])
        XCTAssertEqual(phone.apply([.int(123456)]), [.int(123456)])
        XCTAssertEqual(phone.apply([.int(7), .text("ab-345")]), [.int(7), .text("45")])
        XCTAssertEqual(KeyNormalization.none.apply([.text(" As Is ")]), [.text(" As Is ")])
    }
}
