import AssentServer
import Foundation
import Logging
import Testing

/// Captures what a handler writes.
private final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var written: [String] = []
    var all: [String] { lock.withLock { written } }
    func add(_ data: Data) { lock.withLock { written.append(String(decoding: data, as: UTF8.self)) } }
}

@Suite struct LogHandlerTests {
    private struct Boom: Error, CustomStringConvertible { var description: String { "boom" } }

    /// The text format is swift-log's StreamLogHandler's line: local time, level, label, the
    /// metadata sorted (the logger's, then the line's own over it), [source], message.
    @Test func textLinesAreStreamLogHandlersLines() throws {
        let lines = Lines()
        var logger = Logger(label: "assent") { label in TextLogHandler(label: label, write: lines.add) }
        logger.logLevel = .info
        logger[metadataKey: "request_id"] = "r-1"
        logger[metadataKey: "b"] = "2"
        logger.info("answered", metadata: ["b": "3", "a": "1"])
        logger.debug("not written")
        logger.error("failed", error: Boom())
        let written = lines.all
        #expect(written.count == 2, "\(written)")
        let first = try #require(written.first)
        let pattern = #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} info assent: a=1 b=3 request_id=r-1 \[AssentServerTests\] answered\n$/#
        #expect(first.wholeMatch(of: pattern) != nil, "\(first)")
        #expect(written.last?.contains(" error assent: b=2 error.message=boom error.type=") == true, "\(written)")
        #expect(written.last?.hasSuffix("request_id=r-1 [AssentServerTests] failed\n") == true, "\(written)")
    }
}
