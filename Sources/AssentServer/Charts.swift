import Foundation

/// Charts drawn on the server as inline SVG: no JavaScript, no styles (the
/// pages' CSP allows neither), colours as attributes. Every chart carries a
/// title and a description for screen readers; the page also prints the
/// numbers behind it as a table.
enum BarChart {
    struct Point {
        var label: String
        var value: Int
    }

    /// Bars left to right, with the largest value and the first and last labels on the axes.
    /// `id` must be unique on the page (it ties the title and description to the chart).
    static func svg(_ points: [Point], id: String, title: String, summary: String, width: Int = 640, height: Int = 180) -> String {
        let left = 48, bottom = 24, top = 12, right = 8
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let highest = max(1, points.map(\.value).max() ?? 1)
        let slot = points.isEmpty ? Double(plotWidth) : Double(plotWidth) / Double(points.count)
        let barWidth = max(1.0, slot * 0.8)
        var svg = """
            <svg class="chart" xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" role="img" aria-labelledby="\(id)-title \(id)-desc">
            <title id="\(id)-title">\(escape(title))</title>
            <desc id="\(id)-desc">\(escape(summary))</desc>
            <line x1="\(left)" y1="\(top + plotHeight)" x2="\(width - right)" y2="\(top + plotHeight)" stroke="#505050" stroke-width="1"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(top + plotHeight)" stroke="#505050" stroke-width="1"/>
            <text x="\(left - 6)" y="\(top + 4)" text-anchor="end" font-size="11" fill="#1a1a1a">\(highest)</text>
            <text x="\(left - 6)" y="\(top + plotHeight)" text-anchor="end" font-size="11" fill="#1a1a1a">0</text>

            """
        for (i, point) in points.enumerated() {
            let h = Double(point.value) / Double(highest) * Double(plotHeight)
            let x = Double(left) + Double(i) * slot + (slot - barWidth) / 2
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#0b5cad\">", x, Double(top + plotHeight) - h, barWidth, h)
            svg += "<title>\(escape(point.label)): \(point.value)</title></rect>\n"
        }
        if let first = points.first {
            svg += "<text x=\"\(left)\" y=\"\(height - 6)\" font-size=\"11\" fill=\"#1a1a1a\">\(escape(first.label))</text>\n"
        }
        if points.count > 1, let last = points.last {
            svg += "<text x=\"\(width - right)\" y=\"\(height - 6)\" text-anchor=\"end\" font-size=\"11\" fill=\"#1a1a1a\">\(escape(last.label))</text>\n"
        }
        return svg + "</svg>"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
