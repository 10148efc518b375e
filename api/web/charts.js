// Charts over Apache ECharts (embedded in the binary). Every chart has a table beside it with the
// same numbers, so without ECharts (a build before scripts/install-web) the page stays complete.
'use strict';

const Charts = (() => {
  const available = typeof window.echarts !== 'undefined';
  const instances = new Map();
  const palette = ['#3b6fd8', '#e07b39', '#3aa17e', '#c2476b', '#8a63d2', '#c9a227', '#4aa3c2', '#7f8c8d'];
  const textColor = '#3d4451';
  const axisColor = '#c7ccd6';

  function chart(el) {
    let c = instances.get(el);
    if (!c) {
      c = window.echarts.init(el, null, { renderer: 'canvas' });
      instances.set(el, c);
    }
    return c;
  }

  function set(el, option) {
    if (!available || !el) return;
    el.hidden = false;
    chart(el).setOption(Object.assign({ color: palette, textStyle: { color: textColor }, animationDurationUpdate: 300 }, option), true);
  }

  function clear(el) {
    if (!available || !el) return;
    const c = instances.get(el);
    if (c) c.clear();
  }

  const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.1 ? 2 : 1) + '%';
  const time = (ms) => new Date(ms).toISOString().slice(11, 16);
  const axis = { axisLine: { lineStyle: { color: axisColor } }, splitLine: { lineStyle: { color: '#eef0f4' } } };

  return {
    available,

    // Per-minute lines: series [{name, points: [{minute_ms, value}], axis: 0 | 1}].
    lines(el, series, axisNames) {
      const two = series.some((s) => s.axis === 1);
      set(el, {
        grid: { left: 48, right: two ? 48 : 16, top: 32, bottom: 28 },
        tooltip: { trigger: 'axis', valueFormatter: (v) => Number(v).toLocaleString() },
        legend: { top: 0, data: series.map((s) => s.name) },
        xAxis: Object.assign({ type: 'time', axisLabel: { formatter: (v) => time(v) } }, axis),
        yAxis: [0, 1].slice(0, two ? 2 : 1).map((i) => Object.assign({ type: 'value', name: axisNames ? axisNames[i] : '', minInterval: 1 }, axis)),
        series: series.map((s) => ({
          name: s.name,
          type: 'line',
          showSymbol: false,
          yAxisIndex: s.axis || 0,
          areaStyle: s.axis ? undefined : { opacity: 0.12 },
          data: s.points.map((p) => [p.minute_ms, p.value]),
        })),
      });
    },

    // Vertical bars over labelled categories (sessions per hour).
    columns(el, labels, values, name) {
      set(el, {
        grid: { left: 8, right: 8, top: 16, bottom: 8, containLabel: true },
        tooltip: { trigger: 'axis' },
        xAxis: { type: 'category', data: labels, axisTick: { alignWithLabel: true } },
        yAxis: Object.assign({ type: 'value', minInterval: 1 }, axis),
        series: [{ name, type: 'bar', barMaxWidth: 28, data: values }],
      });
    },

    // Horizontal bars, largest on top; `highlight` is drawn in the accent colour.
    bars(el, rows, highlight) {
      const shown = rows.slice(0, 10).reverse();
      set(el, {
        grid: { left: 8, right: 48, top: 8, bottom: 8, containLabel: true },
        tooltip: { trigger: 'item' },
        xAxis: Object.assign({ type: 'value', show: false }, axis),
        yAxis: { type: 'category', data: shown.map((r) => r.key), axisTick: { show: false }, axisLine: { show: false } },
        series: [{
          type: 'bar',
          barMaxWidth: 18,
          label: { show: true, position: 'right', formatter: (p) => Number(p.value).toLocaleString() },
          data: shown.map((r) => ({ value: r.value, itemStyle: { color: r.key === highlight ? '#e07b39' : palette[0] } })),
        }],
      });
    },

    // Funnel steps as bars (users) with the drop-off stacked on top, conversion in the label.
    funnel(el, steps) {
      const names = steps.map((s) => s.step + '. ' + s.label);
      const start = steps.length ? steps[0].users : 0;
      set(el, {
        grid: { left: 8, right: 8, top: 28, bottom: 8, containLabel: true },
        tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
        legend: { top: 0, data: ['users', 'dropped'] },
        xAxis: { type: 'category', data: names, axisLabel: { interval: 0, width: 110, overflow: 'truncate' } },
        yAxis: Object.assign({ type: 'value', minInterval: 1 }, axis),
        series: [
          {
            name: 'users', type: 'bar', stack: 'f', barMaxWidth: 64,
            label: { show: true, position: 'top', color: textColor, formatter: (p) => pct(start ? steps[p.dataIndex].users / start : 0) },
            data: steps.map((s) => s.users),
          },
          { name: 'dropped', type: 'bar', stack: 'f', itemStyle: { color: '#f0c9b4' }, data: steps.map((s, i) => (i === 0 ? 0 : steps[i - 1].users - s.users)) },
        ],
      });
    },

    // Cohorts (rows) by period (columns), coloured by percent.
    heatmap(el, cohorts) {
      const periods = cohorts.reduce((n, c) => Math.max(n, c.percent.length), 0);
      const data = [];
      // An empty cohort has no rate: its cells stay blank rather than 0%.
      cohorts.forEach((c, row) => c.size && c.percent.forEach((p, col) => data.push([col, row, Math.round(p * 10) / 10])));
      set(el, {
        grid: { left: 8, right: 8, top: 8, bottom: 48, containLabel: true },
        tooltip: { formatter: (p) => cohorts[p.value[1]].cohort + ', period ' + p.value[0] + ': ' + p.value[2] + '%' },
        xAxis: { type: 'category', data: Array.from({ length: periods }, (_, i) => String(i)), splitArea: { show: true } },
        yAxis: { type: 'category', inverse: true, data: cohorts.map((c) => c.cohort + ' (' + c.size + ')'), splitArea: { show: true } },
        visualMap: { min: 0, max: 100, calculable: false, orient: 'horizontal', left: 'center', bottom: 0, itemHeight: 120, text: ['100%', '0%'], inRange: { color: ['#f4f6fb', '#3b6fd8'] } },
        series: [{ type: 'heatmap', data, label: { show: true, formatter: (p) => p.value[2] + '%' } }],
      });
    },

    // A Sankey over layered nodes ({name, label}) and links ({source, target, value}); the
    // caller makes the graph acyclic (ECharts refuses cycles).
    sankey(el, nodes, links) {
      set(el, {
        tooltip: { trigger: 'item' },
        series: [{
          type: 'sankey',
          left: 8, right: 120, top: 8, bottom: 8,
          nodeGap: 10,
          emphasis: { focus: 'adjacency' },
          lineStyle: { color: 'gradient', opacity: 0.35 },
          label: { formatter: (p) => (p.data.label || p.name) },
          data: nodes,
          links,
        }],
      });
    },

    clear,

    resize() {
      for (const c of instances.values()) c.resize();
    },
  };
})();

window.Charts = Charts;
window.addEventListener('resize', () => Charts.resize());
