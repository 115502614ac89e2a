import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A child process: `assent` commands, the server, wrk.
final class Child: @unchecked Sendable {
    let process = Process()
    let name: String
    private let out: URL, err: URL

    /// Starts `executable arguments` with `environment` added to ours; output goes to files in `logs`.
    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], logs: URL, name: String) throws {
        self.name = name
        out = logs.appendingPathComponent("\(name).out")
        err = logs.appendingPathComponent("\(name).err")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: err, encoding: .utf8)) ?? "" }

    /// Waits for the exit, sampling the peak resident memory (VmHWM) meanwhile.
    func finish(sampling: Bool = true) async throws -> (seconds: Double, peakRSS: Int) {
        let started = Date()
        var peak = 0
        while process.isRunning {
            if sampling { peak = max(peak, Proc.memory(pid).peak) }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        let seconds = Date().timeIntervalSince(started)
        guard process.terminationStatus == 0 else {
            throw BenchError("\(name) exited with \(process.terminationStatus): \(stderr.suffix(2_000))")
        }
        return (seconds, peak)
    }

    func terminate() {
        if process.isRunning { kill(pid, SIGTERM) }
        process.waitUntilExit()
    }
}

/// Runs a command to its end and returns its standard output (a failure throws with its standard error).
@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:], logs: URL, name: String) async throws -> String {
    let child = try Child(executable, arguments, environment: environment, logs: logs, name: name)
    _ = try await child.finish(sampling: false)
    return child.stdout
}

enum Proc {
    /// Resident memory now and at its peak (VmRSS, VmHWM), in bytes; zeros once the process is gone.
    static func memory(_ pid: Int32) -> (now: Int, peak: Int) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0) * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// CPU time the process has used so far, user and system, in seconds (utime and stime of
    /// /proc/PID/stat); 0 once the process is gone. Its difference over a load run, per request,
    /// says how much of the machine one request costs the server.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return 0 }
        // After the command name: state is field 3, utime 14 and stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU time, in seconds, used so far by the processes of this machine named `name` (their
    /// command, as /proc/PID/stat gives it: PostgreSQL's when it runs here), with that of their
    /// children that ended (cutime, cstime): a backend whose connection closed is reaped by the
    /// postmaster, whose children's time then holds its time. The sum only grows, so a difference
    /// over a run is the run's time (the live processes' alone went down when one ended).
    static func cpuSeconds(named name: String) -> Double {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var total = 0.0
        for entry in entries where entry.first?.isNumber == true {
            guard let text = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"),
                  text[text.index(after: open)..<close] == name else { continue }
            // After the command: state, ppid, ... utime (12th), stime, cutime, cstime.
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 14 else { continue }
            total += [11, 12, 13, 14].compactMap { Double(fields[$0]) }.reduce(0, +)
        }
        return total / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The machine's CPU time so far, busy and in all, in clock ticks (the first line of /proc/stat;
    /// idle and waiting for I/O count as not busy).
    static func machineTicks() -> (busy: Double, total: Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return (0, 0) }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 5 else { return (0, 0) }
        // user nice system idle iowait irq softirq steal (guest time is counted in user already)
        let total = values.prefix(8).reduce(0, +)
        return (total - values[3] - values[4], total)
    }
}

/// wrk's summary: requests per second, the 99th-percentile latency, and answers that were not 2xx/3xx.
struct WrkResult: Codable {
    var requestsPerSecond: Double
    var p50Milliseconds: Double
    var p99Milliseconds: Double
    var requests: Int
    /// Answers that were not 2xx or 3xx.
    var errors: Int
    /// Connect, read, write errors and timeouts, as wrk counts them.
    var socketErrors: Int
    /// The server's CPU time per request over the run, in microseconds (when its process was given).
    var serverCPUMicroseconds: Double?
    /// PostgreSQL's CPU time per request over the run, in microseconds (when it runs on this machine).
    var databaseCPUMicroseconds: Double?
    /// The share of the machine's CPU time that was busy over the run (every process, wrk's too).
    var machineBusy: Double?

    static func parse(_ text: String) throws -> WrkResult {
        func number(after label: String) -> Double? {
            guard let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(label) }) else { return nil }
            let rest = line.trimmingCharacters(in: .whitespaces).dropFirst(label.count).trimmingCharacters(in: .whitespaces)
            return Double(rest.split(separator: " ").first.map(String.init) ?? "")
        }
        func latency(_ label: String) -> Double? {
            guard let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(label) }) else { return nil }
            guard let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first else { return nil }
            let units: [(String, Double)] = [("us", 0.001), ("ms", 1), ("s", 1000), ("m", 60_000)]
            for (unit, factor) in units where value.hasSuffix(unit) {
                if let n = Double(value.dropLast(unit.count)) { return n * factor }
            }
            return nil
        }
        guard let rps = number(after: "Requests/sec:"), let p99 = latency("99%"), let p50 = latency("50%") else {
            throw BenchError("could not read wrk's output:\n\(text)")
        }
        var requests = 0
        if let line = text.split(separator: "\n").first(where: { $0.contains("requests in") }) {
            requests = Int(line.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "0") ?? 0
        }
        let errors = Int(number(after: "Non-2xx or 3xx responses:") ?? 0)
        // "Socket errors: connect 0, read 0, write 0, timeout 12"
        let socketErrors = text.split(separator: "\n").first { $0.contains("Socket errors:") }.map { line in
            line.split(whereSeparator: { $0 == " " || $0 == "," }).compactMap { Int($0) }.reduce(0, +)
        } ?? 0
        return WrkResult(requestsPerSecond: rps, p50Milliseconds: p50, p99Milliseconds: p99, requests: requests, errors: errors, socketErrors: socketErrors,
                         serverCPUMicroseconds: nil, databaseCPUMicroseconds: nil, machineBusy: nil)
    }
}
