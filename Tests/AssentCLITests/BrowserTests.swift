import AssentTestSupport
import Foundation
import Testing

/// Whether to run the browser test: always under CI=true (missing Chromium
/// then fails the run), else when scripts/test says it installed the browser
/// (ASSENT_TEST_BROWSER=1). Decided without starting a process.
enum BrowserTest {
    static var shouldRun: Bool { TestPostgres.isCI || ProcessInfo.processInfo.environment["ASSENT_TEST_BROWSER"] == "1" }

    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}

/// The person's side end to end in headless Chromium (scripts/browser-e2e.py,
/// driven through WebDriver): an embedded form, the emailed confirmation, the
/// preference centre, the portal and one-click unsubscribe, against the real
/// `assent serve` and a real SMTP server. Screenshots go to test-output/screenshots.
@Suite(.serialized, .enabled(if: BrowserTest.shouldRun, "needs Chromium, chromedriver and selenium: run scripts/test"))
struct BrowserTests {
    @Test func aPersonSignsUpConfirmsAndManagesPreferencesInARealBrowser() async throws {
        let smtp = try SMTPTestServer()
        defer { smtp.stop() }
        let cli = try CLI()
        let server = try ServerProcess(cli: cli, environment: ["ASSENT_SMTP_URL": "smtp://127.0.0.1:\(smtp.port)?starttls=none",
                                                               "ASSENT_ORGANISATION": "Example Ltd"])
        defer { server.stop() }
        let token = try #require(server.token)
        let adminPassword = try #require(server.output.split(separator: "\n").first { $0.contains("one-time password:") }?
            .split(separator: " ").last.map(String.init))
        let screenshots = BrowserTest.root.appendingPathComponent("test-output/screenshots")
        try? FileManager.default.removeItem(at: screenshots)
        try FileManager.default.createDirectory(at: screenshots, withIntermediateDirectories: true)

        let log = cli.directory.appendingPathComponent("browser-e2e.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", BrowserTest.root.appendingPathComponent("scripts/browser-e2e.py").path,
                             "--base", "http://127.0.0.1:\(server.port)", "--token", token,
                             "--maildir", smtp.maildir.path, "--screenshots", screenshots.path,
                             "--admin-email", "admin@assent.localhost", "--admin-password", adminPassword]
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(240)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try output.close()
        let transcript = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "browser test failed:\n\(transcript)")
        let pictures = try FileManager.default.contentsOfDirectory(atPath: screenshots.path).filter { $0.hasSuffix(".png") }
        #expect(pictures.count >= 20, "screenshots: \(pictures.sorted())")
    }
}
