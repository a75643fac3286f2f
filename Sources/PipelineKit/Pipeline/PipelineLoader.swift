import Crypto
import Foundation
import Yams

/// Choices made on the command line that shape a loaded pipeline.
public struct LoadOptions: Sendable {
    public var environment: [String: String]
    public var variableOverrides: [(name: String, value: String)]
    public var asOf: CivilDate?
    /// Today, for the default `as_of`; injectable for tests.
    public var now: Date

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                variableOverrides: [(name: String, value: String)] = [],
                asOf: CivilDate? = nil, now: Date = Date()) {
        self.environment = environment
        self.variableOverrides = variableOverrides
        self.asOf = asOf
        self.now = now
    }
}

/// Loads and validates a pipeline file, reporting every problem at once.
public struct PipelineLoader: Sendable {
    public let registry: StageRegistry

    public init(registry: StageRegistry) { self.registry = registry }

    public static let topLevelKeys: [ConfigKey] = [
        .required("pipeline", .identifier, "the pipeline's name, used in lineage and application_name"),
        .optional("description", .string, "what the pipeline is for"),
        .optional("connections", .dictionary(.either([.string, .object(connectionKeys)])),
                  "named PostgreSQL connections: a libpq conninfo or URI, with ${VAR} / ${VAR:-default} from the environment"),
        .optional("variables", .dictionary(.either([.object(variableKeys), .any])),
                  "typed variables with defaults, used as ${name} in stage configs; override with --var"),
        .optional("defaults", .object(defaultKeys), "settings every stage inherits"),
        .required("stages", .list(.object(stageKeys)), "the stages, each with id, type, inputs and config"),
    ]

    static let connectionKeys: [ConfigKey] = [
        .required("url", .string, "libpq conninfo or URI; secrets only through ${VAR} or .pgpass"),
        .optional("read_only", .boolean, "sessions refuse to write (default false)"),
    ]

    static let variableKeys: [ConfigKey] = [
        .required("type", .choice(VariableValue.Kind.allCases.map(\.rawValue)), "the variable's type"),
        .optional("default", .any, "the value unless --var overrides it"),
        .optional("description", .string, "what the variable means"),
    ]

    static let defaultKeys: [ConfigKey] = [
        .optional("retry", .object(RetryPolicy.configKeys), "retry policy for transient failures"),
        .optional("concurrency", .integer(min: 1), "stages run at once (default: --jobs, or the number of cores)"),
        .optional("warehouse", .identifier, "the connection that holds the run lock and lineage mirror"),
    ]

    static let stageKeys: [ConfigKey] = [
        .required("id", .identifier, "unique stage id"),
        .required("type", .identifier, "the stage type (see `runner stages`)"),
        .optional("inputs", .names, "ids of the stages whose output this stage reads"),
        .optional("description", .string, "what the stage is for"),
        .optional("retry", .object(RetryPolicy.configKeys), "overrides defaults.retry for this stage"),
        .optional("config", .any, "the stage type's own settings"),
    ]

    public func load(path: String, options: LoadOptions = LoadOptions()) throws -> PipelineDefinition {
        let sink = DiagnosticSink(file: path)
        let data = FileManager.default.contents(atPath: path)
        guard let data else {
            sink.error(line: 1, column: 1, "cannot read the file (does it exist and is it readable?)")
            throw PipelineDefinitionError(diagnostics: sink.sorted())
        }
        return try load(data: data, file: path, options: options)
    }

    public func load(data: Data, file: String, options: LoadOptions = LoadOptions()) throws -> PipelineDefinition {
        let sink = DiagnosticSink(file: file)
        let fail = { PipelineDefinitionError(diagnostics: sink.sorted()) }
        guard let root = SourceFile.parse(data, sink: sink) else { throw fail() }
        guard root.isMapping else {
            sink.error(at: root, "the document must be a mapping with 'pipeline:' and 'stages:', not \(root.kindName)")
            throw fail()
        }
        ConfigChecker(sink: sink).check(root, against: .object(Self.topLevelKeys), what: "the pipeline file")

        let connections = loadConnections(root["connections"], options: options, sink: sink)
        // Names count as defined even when their string failed to resolve, so one
        // missing variable yields one message, not one per stage using it.
        let declaredConnections = Dictionary((root["connections"]?.entries ?? []).map { ($0.key, $0.value["read_only"]?.bool ?? false) },
                                             uniquingKeysWith: { a, _ in a })
        let variables = loadVariables(root["variables"], options: options, sink: sink)
        let defaults = root["defaults"]
        let defaultRetry = RetryPolicy.default.overridden(by: defaults?["retry"], sink: sink)
        if let warehouse = defaults?["warehouse"], let name = warehouse.string, declaredConnections[name] == nil {
            sink.error(at: warehouse, "defaults.warehouse names connection '\(name)', which is not defined under 'connections'"
                       + Suggestion.didYouMean(name, in: Array(declaredConnections.keys)))
        }
        let stages = loadStages(root["stages"], connections: declaredConnections, variables: variables,
                                defaultRetry: defaultRetry, sink: sink)
        if sink.hasErrors { throw fail() }
        return PipelineDefinition(
            name: root["pipeline"]?.string ?? "",
            description: root["description"]?.string ?? "",
            file: file,
            fileSHA256: Hex.string(SHA256.hash(data: data)),
            connections: connections,
            variables: variables,
            asOf: CivilDate(written: variables["as_of"]?.text ?? "") ?? CivilDate(year: 2000, month: 1, day: 1),
            concurrency: defaults?["concurrency"]?.int,
            warehouse: defaults?["warehouse"]?.string,
            stages: stages,
            defaultRetry: defaultRetry
        )
    }

    // MARK: connections

    private func loadConnections(_ node: ConfigNode?, options: LoadOptions, sink: DiagnosticSink) -> [String: ConnectionDefinition] {
        var result: [String: ConnectionDefinition] = [:]
        for entry in node?.entries ?? [] {
            let urlNode = entry.value.isMapping ? entry.value["url"] : entry.value
            guard let urlNode, let written = urlNode.string else { continue }
            let readOnly = entry.value["read_only"]?.bool ?? false
            let (text, unresolved, malformed) = Interpolation.substitute(written) { options.environment[$0] }
            if malformed {
                sink.error(at: urlNode, "connection '\(entry.key)': unclosed '${' in the connection string")
                continue
            }
            for name in unresolved {
                sink.error(at: urlNode, "connection '\(entry.key)': environment variable \(name) is not set and has no default; export it or write ${\(name):-default}")
            }
            if !unresolved.isEmpty { continue }
            // The text as the file writes it, defaults of ${VAR:-default} included:
            // a password that survives there is written in the file.
            let placeholder = "pipelinekit_reference"
            let asWritten = (try? ConnInfo(Interpolation.asWritten(written, placeholder: placeholder) ?? "").parsed()) ?? [:]
            if let key = ["password", "sslpassword"].first(where: { asWritten[$0].map { !$0.isEmpty && !$0.contains(placeholder) } ?? false }) {
                sink.error(at: urlNode, "connection '\(entry.key)': a password is written in the pipeline file\(key == "password" ? "" : " ('\(key)')") (the default of a ${VAR:-default} is part of the file too); pass it through ${VAR} without a default, PGPASSWORD or ~/.pgpass")
                continue
            }
            let info = ConnInfo(text)
            do { _ = try info.parsed() } catch {
                sink.error(at: urlNode, "connection '\(entry.key)': \(error)")
                continue
            }
            result[entry.key] = ConnectionDefinition(name: entry.key, info: info, readOnly: readOnly)
        }
        return result
    }

    // MARK: variables

    private func loadVariables(_ node: ConfigNode?, options: LoadOptions, sink: DiagnosticSink) -> [String: VariableValue] {
        var result: [String: VariableValue] = [:]
        // Declared with a default that was reported as wrong: known, but without a value.
        var badDefaults: Set<String> = []
        func badDefault(_ name: String, _ kind: VariableValue.Kind) {
            guard kind != .string else { return }
            result[name] = VariableValue(kind: kind, text: "")
            badDefaults.insert(name)
        }
        for entry in node?.entries ?? [] {
            if entry.key == "as_of" {
                sink.error(at: entry.keyNode, "'as_of' is built in (set it with --as-of); choose another variable name")
                continue
            }
            if entry.value.isMapping {
                guard let kind = entry.value["type"]?.string.flatMap(VariableValue.Kind.init(rawValue:)) else { continue }
                guard let value = entry.value["default"] else {
                    result[entry.key] = VariableValue(kind: kind, text: "")
                    continue
                }
                guard let text = value.string, value.isScalar else {
                    sink.error(at: value, "variable '\(entry.key)': the default must be a single value, not \(value.kindName)")
                    badDefault(entry.key, kind)
                    continue
                }
                if let problem = VariableValue.problem(kind: kind, text: text) {
                    sink.error(at: value, "variable '\(entry.key)': default '\(text)' \(problem) (declared \(kind.rawValue))")
                    badDefault(entry.key, kind)
                    continue
                }
                result[entry.key] = VariableValue(kind: kind, text: text)
            } else if let text = entry.value.string, entry.value.isScalar {
                let kind: VariableValue.Kind = entry.value.node.scalar?.style != .plain ? .string
                    : Int(text) != nil ? .int : Double(text) != nil ? .number
                    : ["true", "false"].contains(text) ? .bool : CivilDate(written: text) != nil ? .date : .string
                result[entry.key] = VariableValue(kind: kind, text: text)
            } else {
                sink.error(at: entry.value, "variable '\(entry.key)' must be a value or a mapping with type and default, not \(entry.value.kindName)")
            }
        }
        let commandLine = DiagnosticSink(file: "--var")
        for (name, value) in options.variableOverrides {
            guard let declared = result[name] else {
                commandLine.error(line: 1, column: 1, "--var \(name)=…: the pipeline declares no variable '\(name)'"
                                  + Suggestion.didYouMean(name, in: Array(result.keys)))
                continue
            }
            if let problem = VariableValue.problem(kind: declared.kind, text: value) {
                commandLine.error(line: 1, column: 1, "--var \(name)=\(value): the value \(problem) (declared \(declared.kind.rawValue))")
                continue
            }
            result[name] = VariableValue(kind: declared.kind, text: value)
        }
        commandLine.diagnostics.forEach(sink.append)
        // A --var that was given but rejected was reported above; "no default" would repeat it.
        let given = Set(options.variableOverrides.map(\.name))
        for (name, value) in result where value.text.isEmpty && value.kind != .string && !badDefaults.contains(name)
                                          && !given.contains(name) {
            if let node = node?[name] {
                sink.error(at: node, "variable '\(name)' has no default; give one or pass --var \(name)=VALUE")
            }
        }
        let asOf = options.asOf ?? today(in: result["timezone"]?.text, now: options.now)
        result["as_of"] = VariableValue(kind: .date, text: asOf.description)
        return result
    }

    private func today(in zoneName: String?, now: Date) -> CivilDate {
        let zone = zoneName.flatMap(TimeZone.init(identifier:)) ?? TimeZone(identifier: "UTC")!
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let parts = calendar.dateComponents([.year, .month, .day], from: now)
        return CivilDate(year: parts.year!, month: parts.month!, day: parts.day!)
    }

    // MARK: stages

    private func loadStages(_ node: ConfigNode?, connections: [String: Bool],
                            variables: [String: VariableValue], defaultRetry: RetryPolicy,
                            sink: DiagnosticSink) -> [StageDefinition] {
        let items = node?.items ?? []
        if node != nil, node!.isSequence, items.isEmpty {
            sink.error(at: node!, "'stages' is empty; a pipeline needs at least one stage")
        }
        // First pass: ids, types and inputs, so that each stage can be checked against the others.
        var seen: [String: ConfigNode] = [:]
        var kinds: [String: OutputKind] = [:]
        for item in items {
            guard let idNode = item["id"], let id = idNode.string else { continue }
            if let first = seen[id] {
                sink.error(at: idNode, "duplicate stage id '\(id)' (first defined at line \(first.line)); stage ids must be unique")
                continue
            }
            seen[id] = idNode
            if let typeNode = item["type"], let typeName = typeNode.string {
                if let type = registry.type(named: typeName) {
                    kinds[id] = type.produces
                } else {
                    sink.error(at: typeNode, "stage '\(id)': unknown stage type '\(typeName)'"
                               + (Suggestion.closest(to: typeName, in: registry.names).map { "; did you mean '\($0)'?" } ?? "")
                               + " (known types: \(registry.names.joined(separator: ", ")))")
                }
            }
        }
        var result: [StageDefinition] = []
        for item in items {
            // Inputs are checked whatever the type: an unknown type is one problem, a missing input another.
            guard let id = item["id"]?.string else { continue }
            let inputsNode = item["inputs"]
            let inputs = inputsNode?.strings ?? []
            var inputKinds: [String: OutputKind] = [:]
            // Inputs reported as wrong here or in their own stage: the config's
            // references to them would only repeat the mistake.
            var brokenInputs: Set<String> = []
            for (index, input) in inputs.enumerated() {
                let at = inputsNode!.isSequence ? inputsNode!.items[index] : inputsNode!
                if input == id {
                    sink.error(at: at, "stage '\(id)' lists itself as an input")
                    brokenInputs.insert(input)
                } else if let kind = kinds[input] {
                    inputKinds[input] = kind
                } else {
                    if seen[input] == nil {
                        sink.error(at: at, "stage '\(id)': input '\(input)' is not a stage of this pipeline"
                                   + Suggestion.didYouMean(input, in: Array(seen.keys)))
                    }
                    brokenInputs.insert(input)
                }
            }
            guard let typeName = item["type"]?.string, let type = registry.type(named: typeName) else { continue }
            let (configNode, unresolved) = interpolate(item["config"] ?? ConfigNode(Node.mapping(.init([])), path: "config",
                                                                        line: item.line, column: item.column),
                                         variables: variables, stageID: id, sink: sink)
            // A config with an unresolved ${name} cannot be checked meaningfully: one mistake, one message.
            if unresolved { continue }
            let checker = ConfigChecker(sink: sink)
            guard checker.check(configNode, against: .object(type.configKeys), what: "config of stage '\(id)' (\(typeName))") else { continue }
            let build = StageBuild(stageID: id, sink: sink, inputs: inputKinds, brokenInputs: brokenInputs,
                                   connections: Set(connections.keys), connectionModes: connections)
            guard let implementation = try? type.init(config: configNode, build: build) else { continue }
            let fingerprintSource = (try? Yams.serialize(node: configNode.node)) ?? ""
            result.append(StageDefinition(
                id: id, type: typeName, inputs: inputs,
                retry: defaultRetry.overridden(by: item["retry"], sink: sink),
                implementation: implementation,
                configFingerprint: Hex.string(SHA256.hash(data: Data(fingerprintSource.utf8))),
                refreshFingerprint: refreshFingerprint(type: typeName, inputs: inputs, config: item["config"], variables: variables),
                line: item.line, column: item.column))
        }
        if let cycle = ExecutionPlan.findCycle(ids: items.compactMap { $0["id"]?.string },
                                               inputs: Dictionary(items.compactMap { item in
                                                   item["id"]?.string.map { ($0, item["inputs"]?.strings ?? []) }
                                               }, uniquingKeysWith: { first, _ in first })),
           let first = seen[cycle[0]] {
            sink.error(at: first, "the stages form a cycle: \((cycle + [cycle[0]]).joined(separator: " → ")); remove one of these inputs")
        } else {
            checkColumns(of: result, sink: sink)
        }
        return result
    }

    /// Works out every stage's output columns from its inputs', in dependency
    /// order, so that a column a stage needs and cannot get is reported now
    /// rather than when the run reaches it, maybe after other stages wrote.
    private func checkColumns(of stages: [StageDefinition], sink: DiagnosticSink) {
        let byID = Dictionary(stages.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var known: [String: [Field]?] = [:]
        func columns(of id: String) -> [Field]? {
            if let done = known[id] { return done }
            known[id] = .some(nil)  // no cycle here (checked before), but never loop
            guard let stage = byID[id] else { return nil }
            var inputs: [String: [Field]] = [:]
            for input in stage.inputs { inputs[input] = columns(of: input) }
            do {
                let output = try stage.implementation.outputColumns(inputs: inputs)
                known[id] = .some(output)
                return output
            } catch {
                let message = if case .config(let text) = error as? StageFailure { text } else { "\(error)" }
                sink.error(line: stage.line, column: stage.column, "stage '\(id)': \(message)")
                return nil
            }
        }
        for stage in stages { _ = columns(of: stage.id) }
    }

    /// A stage's fingerprint for incremental refresh: its type, inputs and
    /// configuration resolved with every variable except `as_of`, which moves
    /// on every run without changing what the stage computes.
    private func refreshFingerprint(type: String, inputs: [String], config: ConfigNode?,
                                    variables: [String: VariableValue]) -> String {
        func walk(_ node: Node) -> Node {
            switch node {
            case .scalar(let scalar):
                let (text, _, _) = Interpolation.substitute(scalar.string) { $0 == "as_of" ? "${as_of}" : variables[$0]?.text }
                return .scalar(.init(text, scalar.tag, scalar.style))
            case .mapping(let mapping):
                return .mapping(.init(mapping.map { (walk($0.key), walk($0.value)) }, mapping.tag, mapping.style))
            case .sequence(let sequence):
                return .sequence(.init(sequence.map(walk), sequence.tag, sequence.style))
            default:
                return node
            }
        }
        let resolved = config.map { (try? Yams.serialize(node: walk($0.node))) ?? "" } ?? ""
        let source = "type: \(type)\ninputs: \(inputs.joined(separator: ","))\n\(resolved)"
        return Hex.string(SHA256.hash(data: Data(source.utf8)))
    }

    /// Replaces `${name}` in every scalar of a stage config with pipeline variables.
    private func interpolate(_ config: ConfigNode, variables: [String: VariableValue],
                             stageID: String, sink: DiagnosticSink) -> (ConfigNode, unresolved: Bool) {
        var anyUnresolved = false
        func walk(_ node: Node) -> Node {
            switch node {
            case .scalar(let scalar):
                guard scalar.string.contains("${") else { return node }
                // A typed variable without a value was reported where it is declared.
                let declaredWithoutValue = { (name: String) in variables[name].map { $0.text.isEmpty && $0.kind != .string } ?? false }
                let (substituted, unresolved, malformed) = Interpolation.substitute(scalar.string) { name in
                    declaredWithoutValue(name) ? nil : variables[name]?.text
                }
                // Keep the written text when something is unresolved, so one mistake gives one message.
                let text = unresolved.isEmpty && !malformed ? substituted : scalar.string
                let located = ConfigNode(node, path: "", line: config.line, column: config.column)
                if malformed { sink.error(at: located, "stage '\(stageID)': unclosed '${' in '\(scalar.string)'") }
                if malformed || !unresolved.isEmpty { anyUnresolved = true }
                for name in unresolved where !declaredWithoutValue(name) {
                    sink.error(at: located, "stage '\(stageID)': variable '\(name)' is not defined under 'variables'"
                               + Suggestion.didYouMean(name, in: Array(variables.keys)))
                }
                // A quoted value stays a string; a plain one is typed by its substituted text.
                let quoted = scalar.style != .plain && scalar.style != .any
                return .scalar(.init(text, quoted ? Tag(.str) : Tag(.implicit), quoted ? scalar.style : .plain, scalar.mark))
            case .mapping(let mapping):
                return .mapping(.init(mapping.map { ($0.key, walk($0.value)) }, mapping.tag, mapping.style, mapping.mark))
            case .sequence(let sequence):
                return .sequence(.init(sequence.map(walk), sequence.tag, sequence.style, sequence.mark))
            default:
                return node
            }
        }
        let node = ConfigNode(walk(config.node), path: config.path, line: config.line, column: config.column)
        return (node, anyUnresolved)
    }
}
