// Line charts with uPlot, sized to their container (phone widths included).
import uPlot from 'uplot';

export function lineChart(element, label, { xLabel = 'version', yLabel = label, color = '#2b6cb0' } = {}) {
  const width = () => Math.max(240, element.clientWidth || 320);
  const plot = new uPlot({
    width: width(), height: 180,
    scales: { x: { time: false } },
    series: [{ label: xLabel }, { label, stroke: color, width: 2 }],
    axes: [{ label: xLabel }, { label: yLabel, size: 60 }],
    legend: { show: false },
  }, [[], []], element);
  new ResizeObserver(() => plot.setSize({ width: width(), height: 180 })).observe(element);
  return {
    update(xs, ys) { plot.setData([xs, ys]); },
  };
}
