import ArgumentParser
import Foundation
import PipelineKit

extension Runner {
    struct Lineage: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Audit what pipelines did: runs, stages, tables, differences, and the log's integrity.",
            discussion: "runs/show/table/diff read the warehouse mirror (schema lineage); verify reads the log file.",
            subcommands: [Runs.self, Show.self, Table.self, Diff.self, Verify.self])
    }
}

/// Where the mirror is: an explicit conninfo, or a pipeline's `defaults.warehouse` connection.
struct WarehouseOptions: ParsableArguments {
    @Option(help: "Warehouse conninfo or URI holding the lineage schema.")
    var warehouse: String?

    @Option(help: "Take the warehouse connection from this pipeline (path or name).")
    var pipeline: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func queries(pipelineHint: String? = nil) throws -> LineageQueries {
        if let warehouse { return try LineageQueries(warehouse: ConnInfo(warehouse)) }
        guard let source = pipeline ?? pipelineHint else {
            throw ValidationError("give --warehouse CONNINFO or --pipeline PIPELINE")
        }
        let definition = try loadPipeline(PipelineArgument(pipeline: source).path, LoadOptions())
        guard let name = definition.warehouse, let connection = definition.connections[name] else {
            throw ValidationError("pipeline '\(definition.name)' declares no defaults.warehouse; give --warehouse")
        }
        return try LineageQueries(warehouse: connection.info)
    }

    func print(_ table: TextTable) throws {
        Swift.print(json ? try table.json.line() : table.rendered)
    }
}

extension PipelineArgument {
    init(pipeline: String) {
        self.init()
        self.pipeline = pipeline
    }
}

extension Runner.Lineage {
    struct Runs: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Runs of a pipeline: status, start, duration, rows written, as_of.")
        @Argument(help: "The pipeline (path or name); its warehouse is read unless --warehouse is given.")
        var pipeline: String
        @OptionGroup var options: WarehouseOptions

        func run() throws {
            let name = (try? PipelineLoader(registry: .standard).load(path: PipelineArgument(pipeline: pipeline).path).name)
                ?? URL(fileURLWithPath: pipeline).deletingPathExtension().lastPathComponent
            try options.print(try options.queries(pipelineHint: pipeline).runs(pipeline: name))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One run stage by stage: attempts, rows in and out, writes, data quality, errors.")
        @Argument(help: "The run id, or its first digits as summaries print them.") var runID: String
        @OptionGroup var options: WarehouseOptions

        func run() throws {
            let queries = try options.queries()
            let runID = try queries.resolveRun(self.runID)
            let run = try queries.run(runID)
            if options.json {
                print(try JSON.object(["run": run.json, "stages": try queries.stages(runID).json]).line())
            } else {
                for (column, value) in zip(run.columns, run.rows[0]) { print("\(column): \(value)") }
                print("")
                print(try queries.stages(runID).rendered)
            }
        }
    }

    struct Table: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every run that wrote SCHEMA.TABLE, with counts and config fingerprints.")
        @Argument(help: "schema.table") var table: String
        @OptionGroup var options: WarehouseOptions

        func run() throws {
            let history = try options.queries().tableHistory(table)
            guard !history.rows.isEmpty else {
                throw LineageLookupFailed("no write to '\(table)' is recorded in the lineage mirror; name the table as the pipeline does, schema.table (e.g. dw.userprogram_fact)")
            }
            try options.print(history)
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What changed between two runs: pipeline hash, stage configs, variables, row counts.")
        @Argument(help: "The first run id (or its first digits).") var runA: String
        @Argument(help: "The second run id (or its first digits).") var runB: String
        @OptionGroup var options: WarehouseOptions

        func run() throws {
            let queries = try options.queries()
            try options.print(try queries.diff(try queries.resolveRun(runA), try queries.resolveRun(runB)))
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a lineage log's hash chain; exit 0 when intact, 1 naming the first bad line.")
        @Argument(help: "The lineage log (JSON lines).") var path: String
        @Option(help: "Warehouse conninfo: also check that each run's last event is in the log (detects cut-off lines).")
        var against: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            switch LineageLog.fileType(absolute) {
            case S_IFREG: break
            case nil: throw ValidationError("\(path): no such file")
            case S_IFDIR: throw ValidationError("\(path): is a directory, not a lineage log")
            // Foundation would refuse a pipe or /dev/zero with a misleading "permission denied".
            default: throw ValidationError("\(path): is not a file (a pipe, socket or device), not a lineage log")
            }
            let known = try against.map { try LineageQueries(warehouse: ConnInfo($0)).lastHashes(logPath: absolute) } ?? []
            if against != nil && known.isEmpty {
                // Checking against nothing would look like a pass.
                printError("\(path): no run in that warehouse wrote to \(absolute); nothing to check the log against (the mirror names each log by its absolute path)")
                throw ExitCode(1)
            }
            let result = try LineageVerifier.verify(path: absolute, knownLastHashes: known)
            if json {
                print(try JSON.object([
                    "intact": .bool(result.isIntact), "events": .int(result.events),
                    "problems": .array(result.problems.map(JSON.string)), "notes": .array(result.notes.map(JSON.string)),
                    "runsChecked": .int(known.count),
                ]).line())
            } else {
                result.notes.forEach { print("note: \($0)") }
                result.problems.forEach { printError("\(path): \($0)") }
                print(result.isIntact ? "\(path): intact (\(result.events) events\(against == nil ? "" : ", \(known.count) runs checked against the warehouse"))"
                                      : "\(path): NOT intact (\(result.problems.count) problem\(result.problems.count == 1 ? "" : "s"))")
            }
            if !result.isIntact { throw ExitCode(1) }
        }
    }
}
