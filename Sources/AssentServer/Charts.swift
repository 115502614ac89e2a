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

/// Bars grouped by category, one colour per series, with a legend: states
/// per topic, opt-ins against opt-outs per week.
enum GroupedBarChart {
    struct Series {
        var name: String
        var colour: String
        var values: [Int]
    }

    /// Colours that stay apart for colour-blind readers (Okabe–Ito).
    static let palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"]

    static func svg(categories: [String], series: [Series], id: String, title: String, summary: String, width: Int = 720, height: Int = 240) -> String {
        let left = 48, bottom = 40, top = 12, right = 8, legendHeight = 18
        let plotWidth = width - left - right, plotHeight = height - top - bottom - legendHeight
        let highest = max(1, series.flatMap(\.values).max() ?? 1)
        let slot = categories.isEmpty ? Double(plotWidth) : Double(plotWidth) / Double(categories.count)
        let bar = max(1.0, slot * 0.8 / Double(max(1, series.count)))
        let e = BarChart.escape
        var svg = """
            <svg class="chart" xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" role="img" aria-labelledby="\(id)-title \(id)-desc">
            <title id="\(id)-title">\(e(title))</title>
            <desc id="\(id)-desc">\(e(summary))</desc>
            <line x1="\(left)" y1="\(top + plotHeight)" x2="\(width - right)" y2="\(top + plotHeight)" stroke="#505050" stroke-width="1"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(top + plotHeight)" stroke="#505050" stroke-width="1"/>
            <text x="\(left - 6)" y="\(top + 4)" text-anchor="end" font-size="11" fill="#1a1a1a">\(highest)</text>
            <text x="\(left - 6)" y="\(top + plotHeight)" text-anchor="end" font-size="11" fill="#1a1a1a">0</text>

            """
        for (c, category) in categories.enumerated() {
            let groupStart = Double(left) + Double(c) * slot + slot * 0.1
            for (s, one) in series.enumerated() {
                let value = c < one.values.count ? one.values[c] : 0
                let h = Double(value) / Double(highest) * Double(plotHeight)
                svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\">", groupStart + Double(s) * bar,
                              Double(top + plotHeight) - h, bar, h, one.colour)
                svg += "<title>\(e(category)), \(e(one.name)): \(value)</title></rect>\n"
            }
            // Label every category when they fit, else every few.
            let every = max(1, Int((Double(categories.count) * 70 / Double(plotWidth)).rounded(.up)))
            if c % every == 0 {
                svg += String(format: "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\" fill=\"#1a1a1a\">%@</text>\n",
                              Double(left) + (Double(c) + 0.5) * slot, top + plotHeight + 16, e(String(category.prefix(14))))
            }
        }
        var x = left
        for one in series {
            svg += "<rect x=\"\(x)\" y=\"\(height - legendHeight + 2)\" width=\"12\" height=\"12\" fill=\"\(one.colour)\"/>"
            svg += "<text x=\"\(x + 16)\" y=\"\(height - legendHeight + 12)\" font-size=\"11\" fill=\"#1a1a1a\">\(e(one.name))</text>\n"
            x += 24 + one.name.count * 7
        }
        return svg + "</svg>"
    }
}
