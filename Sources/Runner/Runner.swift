import ArgumentParser
import Foundation
import PipelineKit
import Stages

@main
struct Runner: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Validate, plan and run PipelineKit pipelines.",
        version: PipelineKitInfo.version,
        subcommands: [Run.self, Validate.self, Plan.self, Stages.self, Lineage.self])

    /// Like the default entry point, except that usage errors exit 2 (as
    /// invalid pipelines do) rather than ArgumentParser's 64.
    static func main() async {
        // The subcommand that was parsed: a usage error it throws while
        // running is shown with its own usage, not the top-level one.
        var parsed: ParsableCommand.Type = Runner.self
        do {
            var command = try parseAsRoot()
            parsed = type(of: command)
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(usageMessage(for: error, in: parsed))
                Foundation.exit(ExitCode32.invalid)
            }
            exit(withError: error)
        }
    }
}

extension Runner {
    /// A usage error with the usage of the command it concerns: ArgumentParser
    /// knows the subcommand only for errors it found while parsing.
    static func usageMessage(for error: Error, in command: ParsableCommand.Type) -> String {
        guard command != Runner.self else { return fullMessage(for: error) }
        let usage = usageString(for: command)
        let name = usage.prefix { $0 != "<" && $0 != "[" }.trimmingCharacters(in: .whitespaces)
        return "Error: \(message(for: error))\nUsage: \(usage)\n  See '\(name) --help' for more information."
    }
}

/// How the CLI ends, documented in the README.
enum ExitCode32 {
    static let failed: Int32 = 1
    static let invalid: Int32 = 2
    static let locked: Int32 = 3
    static let aborted: Int32 = 130
}

/// PIPELINE as a path, or a bare name resolved to `pipelines/NAME.yaml`.
struct PipelineArgument: ParsableArguments {
    @Argument(help: "A pipeline file, or a bare name resolved to pipelines/NAME.yaml.")
    var pipeline: String

    var path: String {
        if pipeline.contains("/") || pipeline.hasSuffix(".yaml") || pipeline.hasSuffix(".yml") { return pipeline }
        return "pipelines/\(pipeline).yaml"
    }
}

struct VariableOptions: ParsableArguments {
    @Option(name: .customLong("var"), help: "Override a pipeline variable, NAME=VALUE (repeatable).")
    var variables: [String] = []

    @Option(help: "The as_of date, YYYY-MM-DD (default: today in the pipeline's timezone).")
    var asOf: String?

    func loadOptions() throws -> LoadOptions {
        var overrides: [(String, String)] = []
        for text in variables {
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw ValidationError("--var expects NAME=VALUE, got '\(text)'")
            }
            overrides.append((String(text[..<equals]), String(text[text.index(after: equals)...])))
        }
        var asOfDate: CivilDate?
        if let asOf {
            guard let date = CivilDate(written: asOf) else { throw ValidationError("--as-of expects a real date YYYY-MM-DD from 0001-01-01 to 9999-12-31, got '\(asOf)'") }
            asOfDate = date
        }
        return LoadOptions(variableOverrides: overrides, asOf: asOfDate)
    }
}

/// Loads a pipeline, printing every problem and exiting 2 when it is invalid.
func loadPipeline(_ path: String, _ options: LoadOptions) throws -> PipelineDefinition {
    do {
        return try PipelineLoader(registry: .standard).load(path: path, options: options)
    } catch let error as PipelineDefinitionError {
        for diagnostic in error.diagnostics { printError(diagnostic.description) }
        printError("\(error.diagnostics.count) problem\(error.diagnostics.count == 1 ? "" : "s") in \(path); nothing was run")
        throw ExitCode(ExitCode32.invalid)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
