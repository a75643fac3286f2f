import ArgumentParser
import Foundation
import Logging
import PipelineKit

extension Runner {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a pipeline: stages in dependency order, concurrently, with retries.",
            discussion: "Exit codes: 0 success, 1 a stage failed, 2 invalid pipeline or arguments, 3 another run holds the lock, 130 aborted by SIGINT/SIGTERM.")

        @OptionGroup var pipeline: PipelineArgument
        @OptionGroup var variables: VariableOptions

        @Option(name: .customLong("select"), help: "Run only STAGE, or STAGE+ for it and everything downstream (repeatable).")
        var selectors: [String] = []

        // Unconditional, so that `--jobs -1` is told it must be at least 1 instead of "missing value".
        // Optional, so that help names the default instead of this machine's core count.
        @Option(parsing: .unconditional, help: "Stages run at once (default: the number of cores).")
        var jobs: Int?

        var jobCount: Int { jobs ?? ProcessInfo.processInfo.activeProcessorCount }

        @Flag(help: "Rebuild every table from all source rows instead of refreshing incrementally (also allows an --as-of before the last run's).")
        var fullRefresh = false

        @Flag(help: "Wait for a concurrent run of the same pipeline instead of exiting with code 3.")
        var wait = false

        @Option(help: "Log format: text for people, json for machines (one object per line).")
        var logFormat: LogFormat = .text

        @Option(help: "Append OpenLineage events to this JSON-lines file.")
        var lineageLog: String = ".pipelinekit/lineage.jsonl"

        func validate() throws {
            if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        }

        func run() async throws {
            let logger = LogSetup.logger(format: logFormat)
            let definition = try loadPipeline(pipeline.path, try variables.loadOptions())
            let progress = ProgressDisplay(enabled: logFormat == .text && isatty(STDERR_FILENO) == 1)
            let log: LineageLog
            do {
                log = try LineageLog(path: URL(fileURLWithPath: lineageLog).standardizedFileURL.path)
            } catch {
                printError("error: \(error)")
                throw ExitCode(ExitCode32.failed)
            }
            let options = RunOptions(jobs: jobCount, selectors: selectors, fullRefresh: fullRefresh, waitForLock: wait,
                                     logger: logger, observers: [progress], lineageLog: log)
            let executor: PipelineExecutor
            do {
                executor = try PipelineExecutor(pipeline: definition, options: options)
            } catch {
                printError("\(pipeline.path): \(error)")
                throw ExitCode(ExitCode32.invalid)
            }
            let signals = SignalTrap { name in executor.cancel(reason: "received \(name)") }
            defer { signals.release() }
            let report: RunReport
            do {
                report = try await executor.run()
            } catch let error as RunLockHeld {
                printError("error: \(error)")
                throw ExitCode(ExitCode32.locked)
            } catch let error as RefreshRefused {
                printError("\(pipeline.path): \(error)")
                throw ExitCode(ExitCode32.invalid)
            } catch {
                printError("error: \(error)")
                throw ExitCode(ExitCode32.failed)
            }
            progress.finish()
            print(report.summaryTable)
            switch report.status {
            case .succeeded: return
            case .failed: throw ExitCode(ExitCode32.failed)
            case .aborted: throw ExitCode(ExitCode32.aborted)
            }
        }
    }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

/// SIGINT and SIGTERM abort the run gracefully instead of killing the process.
final class SignalTrap: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []

    init(_ handler: @escaping @Sendable (String) -> Void) {
        for (signalNumber, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { handler(name) }
            source.resume()
            sources.append(source)
        }
    }

    func release() {
        sources.forEach { $0.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
