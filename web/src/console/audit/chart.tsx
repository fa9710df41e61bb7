/**
 * Events per hour by kind family, stacked bars drawn with uPlot (bundled, loaded only when
 * an auditor opens the chart, so officials never download it). uPlot styles
 * its elements through the CSSOM, which the CSP's `style-src 'self'` allows;
 * its stylesheet is bundled into the app's CSS (main.tsx).
 */
import { useEffect, useRef } from "preact/hooks";
import type { Lang } from "../../i18n";

const COLOURS = ["#0b4f8a", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#4b5563", "#be185d"];

export function HourChart({ lang, hours, series, label }: { lang: Lang; hours: number[]; series: Map<string, number[]>; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    let plot: { destroy: () => void } | null = null;
    let gone = false;
    void (async () => {
      const { default: uPlot } = await import("uplot");
      if (gone || box.current === null) return;
      // Stacked: each kind's bar sits on the ones before it (drawn from the top down, so each shows).
      const names = [...series.keys()].sort();
      const stacked: number[][] = [];
      names.forEach((n, i) => stacked.push(series.get(n)!.map((v, h) => v + (i > 0 ? stacked[i - 1]![h]! : 0))));
      const order = names.map((_, i) => i).reverse();
      const hourFmt = new Intl.DateTimeFormat(lang === "th" ? "th-TH-u-ca-buddhist" : "en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
      const bars = uPlot.paths.bars!({ size: [0.8, 40] });
      plot = new uPlot({
        width: Math.max(300, Math.min(900, box.current.clientWidth || 600)),
        height: 260,
        title: label,
        scales: {
          // One hour of events must not stretch the axis over months, nor counts go fractional.
          x: { time: true, range: () => [hours[0]! - 3600, hours[hours.length - 1]! + 3600] },
          y: { range: (_u, _min, max) => [0, Math.max(1, Math.ceil(max * 1.1))] },
        },
        axes: [
          { space: 110, incrs: [3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400], values: (_u, ticks) => ticks.map((s) => hourFmt.format(new Date(s * 1000))) },
          { label: lang === "th" ? "เหตุการณ์" : "events", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000] },
        ],
        series: [
          { value: (_u, s) => (s == null ? "" : hourFmt.format(new Date(s * 1000))) },
          ...order.map((i) => ({ label: names[i]!, stroke: COLOURS[i % COLOURS.length]!, fill: `${COLOURS[i % COLOURS.length]!}cc`, paths: bars, points: { show: false } })),
        ],
      }, [hours, ...order.map((i) => stacked[i]!)], box.current);
    })();
    return () => { gone = true; plot?.destroy(); };
  }, [lang, hours, series, label]);
  return <div ref={box} class="chart" data-testid="audit-chart" role="img" aria-label={label} />;
}
