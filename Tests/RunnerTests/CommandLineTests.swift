import ArgumentParser
import PipelineKit
import Stages
import XCTest
@testable import Runner

/// How the runner's command line is parsed; no pipeline runs here.
final class CommandLineTests: XCTestCase {
    func testRunParsesEveryOption() throws {
        let command = try Runner.Run.parse([
            "dost_warehouse", "--as-of", "2020-10-15", "--var", "min_listen_secs=45", "--var", "timezone=UTC",
            "--select", "userprogram+", "--select", "partnerorg", "--jobs", "3", "--full-refresh", "--wait",
            "--log-format", "json", "--lineage-log", "/tmp/events.jsonl",
        ])
        XCTAssertEqual(command.pipeline.path, "pipelines/dost_warehouse.yaml")
        XCTAssertEqual(command.variables.asOf, "2020-10-15")
        XCTAssertEqual(command.selectors, ["userprogram+", "partnerorg"])
        XCTAssertEqual(command.jobCount, 3)
        XCTAssertTrue(command.fullRefresh)
        XCTAssertTrue(command.wait)
        XCTAssertEqual(command.logFormat, .json)
        XCTAssertEqual(command.lineageLog, "/tmp/events.jsonl")
        let options = try command.variables.loadOptions()
        XCTAssertEqual(options.asOf, CivilDate(year: 2020, month: 10, day: 15))
        XCTAssertEqual(options.variableOverrides.map(\.name), ["min_listen_secs", "timezone"])
        XCTAssertEqual(options.variableOverrides.map(\.value), ["45", "UTC"])
    }

    func testRunDefaults() throws {
        let command = try Runner.Run.parse(["pipelines/x.yaml"])
        XCTAssertEqual(command.pipeline.path, "pipelines/x.yaml")
        XCTAssertEqual(command.jobCount, ProcessInfo.processInfo.activeProcessorCount)
        XCTAssertFalse(command.fullRefresh)
        XCTAssertEqual(command.logFormat, .text)
        XCTAssertEqual(command.lineageLog, ".pipelinekit/lineage.jsonl")
        XCTAssertNil(try command.variables.loadOptions().asOf)
    }

    func testHelpStatesEachDefaultOnceAndNotThisMachinesCoreCount() {
        let help = Runner.Run.helpMessage(columns: 1000)
        for stated in ["(default: the number of cores)", "default: .pipelinekit/lineage.jsonl", "default: text"] {
            XCTAssertEqual(help.components(separatedBy: stated).count - 1, 1, "\(stated) in:\n\(help)")
        }
        XCTAssertFalse(help.contains("(default: \(ProcessInfo.processInfo.activeProcessorCount))"), help)
    }

    func testAUsageErrorFoundWhileRunningShowsTheUsageOfItsOwnCommand() {
        let message = Runner.usageMessage(for: ValidationError("--as-of expects a date"), in: Runner.Lineage.Show.self)
        XCTAssertTrue(message.hasPrefix("Error: --as-of expects a date\nUsage: runner lineage show <run-id>"), message)
        XCTAssertTrue(message.hasSuffix("See 'runner lineage show --help' for more information."), message)
    }

    func testPlanGraphsEscapeStageIdsAndNamesSoGraphvizAndMermaidCanParseThem() {
        let graph = PlanGraph(name: "p\"q", stages: [(id: "a\"b c]", type: "pgExtract", inputs: []),
                                                   (id: "load#1", type: "factUpsert", inputs: ["a\"b c]"])])
        XCTAssertEqual(graph.dot, """
            digraph "p\\"q" {
              rankdir=LR;
              "a\\"b c]" [label="a\\"b c]\\npgExtract"];
              "load#1" [label="load#1\\nfactUpsert"];
              "a\\"b c]" -> "load#1";
            }
            """)
        XCTAssertEqual(graph.mermaid, """
            flowchart LR
              s0["a#quot;b c]<br/>pgExtract"]
              s1["load#35;1<br/>factUpsert"]
              s0 --> s1
            """)
    }

    func testATextLogEventStaysOnOneLineWithAnErrorsDetailAndHint() {
        XCTAssertEqual(OneLineLogHandler.oneLine("could not connect: refused\n  detail: the detail\n  hint: check it"),
                       "could not connect: refused; detail: the detail; hint: check it")
        XCTAssertEqual(OneLineLogHandler.oneLine("one line"), "one line")
    }

    func testABareNameResolvesUnderPipelinesAndAPathIsKept() throws {
        XCTAssertEqual(try Runner.Validate.parse(["dost"]).pipeline.path, "pipelines/dost.yaml")
        XCTAssertEqual(try Runner.Validate.parse(["./dost"]).pipeline.path, "./dost")
        XCTAssertEqual(try Runner.Validate.parse(["other.yml"]).pipeline.path, "other.yml")
    }

    func testMalformedArgumentsAreUsageErrors() {
        for arguments in [["p", "--jobs", "0"], ["p", "--log-format", "xml"], ["p", "--jobs", "many"], []] {
            XCTAssertThrowsError(try Runner.Run.parse(arguments), "\(arguments)") { error in
                XCTAssertEqual(Runner.exitCode(for: error), .validationFailure, "\(arguments)")
            }
        }
    }

    func testANegativeJobCountIsToldTheLowestItMayBeNotThatItIsMissing() {
        XCTAssertThrowsError(try Runner.Run.parse(["p", "--jobs", "-1"])) { error in
            XCTAssertEqual(Runner.Run.message(for: error), "--jobs must be at least 1")
        }
    }

    func testVarWithoutEqualsAndABadAsOfAreRejectedWithTheValue() throws {
        XCTAssertThrowsError(try Runner.Run.parse(["p", "--var", "novalue"]).variables.loadOptions()) { error in
            XCTAssertTrue("\(error)".contains("'novalue'"), "\(error)")
        }
        XCTAssertThrowsError(try Runner.Run.parse(["p", "--as-of", "2020-02-30"]).variables.loadOptions()) { error in
            XCTAssertTrue("\(error)".contains("'2020-02-30'"), "\(error)")
        }
    }

    func testPlanAndLineageSubcommandsParse() throws {
        XCTAssertEqual(try Runner.Plan.parse(["p", "--format", "mermaid"]).format, .mermaid)
        let verify = try Runner.Lineage.Verify.parse(["log.jsonl", "--against", "dbname=dw", "--json"])
        XCTAssertEqual(verify.path, "log.jsonl")
        XCTAssertEqual(verify.against, "dbname=dw")
        XCTAssertTrue(verify.json)
        let diff = try Runner.Lineage.Diff.parse(["a", "b", "--warehouse", "dbname=dw"])
        XCTAssertEqual([diff.runA, diff.runB], ["a", "b"])
        XCTAssertEqual(diff.options.warehouse, "dbname=dw")
    }
    func testTheReadmeStageReferenceIsWhatTheValidatorDeclares() throws {
        let readme = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("README.md"), encoding: .utf8)
        let documented = Set(readme.split(separator: "\n").map(String.init))
        for type in StageRegistry.standard.all {
            XCTAssertTrue(readme.contains("### `\(type.type)`\n\n\(type.summary)\n"), "the summary of \(type.type)")
            for line in StageDocs.lines(type.configKeys, markdown: true) {
                XCTAssertTrue(documented.contains(line), "README lacks, for \(type.type): \(line) (see runner stages --markdown)")
            }
        }
    }

    func testVerifyRefusesAPipeOrDeviceInsteadOfReadingItForEver() throws {
        let pipe = FileManager.default.temporaryDirectory.appendingPathComponent("verify-\(UUID().uuidString).jsonl").path
        XCTAssertEqual(mkfifo(pipe, 0o600), 0)
        defer { try? FileManager.default.removeItem(atPath: pipe) }
        for path in [pipe, "/dev/zero"] {
            XCTAssertThrowsError(try Runner.Lineage.Verify.parse([path]).run()) { error in
                XCTAssertTrue(String(describing: error).contains("is not a file (a pipe, socket or device), not a lineage log"), "\(error)")
            }
        }
    }

    func testAnAsOfInYearZeroIsRefusedAsPostgreSQLHasNone() throws {
        // It ran, and only lineage's mirror failed on it ("date/time field value out of range").
        XCTAssertThrowsError(try Runner.Run.parse(["p.yaml", "--as-of", "0000-01-01"]).variables.loadOptions()) { error in
            XCTAssertTrue(String(describing: error).contains("--as-of expects a real date YYYY-MM-DD from 0001-01-01 to 9999-12-31, got '0000-01-01'"), "\(error)")
        }
        XCTAssertEqual(try Runner.Run.parse(["p.yaml", "--as-of", "0001-01-01"]).variables.loadOptions().asOf,
                       CivilDate(year: 1, month: 1, day: 1))
    }
}
