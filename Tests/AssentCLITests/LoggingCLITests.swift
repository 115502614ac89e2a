import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `assent serve --log-format json`: one JSON object per line, each request
/// logged with its id, which the response carries too.
@Suite(.serialized) struct LoggingCLITests {
    @Test func jsonLogsCarryEachRequestsID() async throws {
        let cli = try CLI()
        let log = cli.directory.appendingPathComponent("serve.log")
        let server = try ServerProcess(cli: cli, arguments: ["--log-level", "info", "--log-format", "json"], logFile: log)
        defer { server.stop() }
        func get(_ path: String, requestID: String?) async throws -> (status: Int, id: String?) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(server.port)\(path)")!)
            if let requestID { request.setValue(requestID, forHTTPHeaderField: "X-Request-Id") }
            let (_, response) = try await URLSession.shared.data(for: request)
            let http = try #require(response as? HTTPURLResponse)
            return (http.statusCode, http.value(forHTTPHeaderField: "X-Request-Id"))
        }
        let traced = try await get("/healthz", requestID: "trace-123.a_b")
        #expect(traced.status == 200 && traced.id == "trace-123.a_b", "a sane caller id is kept")
        let refused = try await get("/healthz", requestID: "bad id\"}")
        #expect(refused.status == 200 && refused.id != nil && refused.id != "bad id\"}", "anything else gets an id of its own")
        let anonymous = try await get("/api/v1/topics", requestID: nil)
        #expect(anonymous.status == 401 && anonymous.id?.isEmpty == false)
        server.stop()

        let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String] }
        #expect(objects.count == lines.count && !lines.isEmpty, "every line is a JSON object: \(lines)")
        let requests = objects.filter { $0["message"] == "request" }
        let first = try #require(requests.first { $0["request_id"] == "trace-123.a_b" }, "\(objects)")
        #expect(first["route"] == "/healthz" && first["status"] == "200" && first["level"] == "info" && first["method"] == "GET")
        #expect(first["time"]?.hasSuffix("Z") == true && Double(first["duration_ms"] ?? "") != nil)
        #expect(requests.contains { $0["request_id"] == refused.id })
        #expect(requests.contains { $0["request_id"] == anonymous.id && $0["status"] == "401" && $0["route"] == "/api/v1/topics" })
    }

    @Test func anUnknownLogFormatIsRefused() throws {
        let result = try CLI().run(["serve", "--log-format", "xml"])
        #expect(result.status != 0 && result.stderr.contains("--log-format: 'xml' is not text or json"), "\(result.stderr)")
    }
}
