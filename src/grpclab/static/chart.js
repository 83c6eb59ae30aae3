// The front end of grpclab's live charts (grpclab.widgets.ChartWidget), an anywidget module.
//
// The widget's state is the whole figure (data, layout, config), so a view draws whatever the
// kernel last sent, whenever it renders: nothing sent before the view existed is lost.
// plotly.js is not part of this module: it comes once per page from the kernel's one
// PlotlyLibrary widget (a widget reference in `library`), and every chart shares it.
const SHARED = Symbol.for("grpclab.plotly");

function loadPlotly(model) {
  // JupyterLab's plotly renderer (saved figures) brings the same plotly.js and sets
  // window.Plotly, as the bundle below does: whichever came first serves every chart.
  if (!globalThis[SHARED] && globalThis.Plotly?.react) {
    globalThis[SHARED] = Promise.resolve(globalThis.Plotly);
  }
  if (!globalThis[SHARED]) {
    globalThis[SHARED] = (async () => {
      const id = model.get("library").replace(/^IPY_MODEL_/, "");
      const library = await model.widget_manager.get_model(id);
      // plotly.min.js is a UMD bundle: handed a CommonJS `module`, it exports itself there.
      const module = { exports: {} };
      new Function("module", "exports", library.get("source"))(module, module.exports);
      return module.exports;
    })();
    globalThis[SHARED].catch(() => delete globalThis[SHARED]);
  }
  return globalThis[SHARED];
}

function baseTitle(model) {
  // The chart's title without its run subtitle: the widget's own `title`, which its opening
  // state carries, or else the figure's.
  const figureTitle = String(model.get("figure").layout?.title?.text ?? "").split("<br>")[0];
  return model.get("title") || figureTitle;
}

function record(title, figure) {
  // A page-wide note of what each live view drew, keyed by the chart's title (without
  // its subtitle): the browser test reads it after the view gave way to the saved figure.
  const views = (globalThis.__grpclabCharts ||= {});
  const drawn = (figure.data || []).reduce(
    (sum, trace) => sum + Array.from(trace.y || []).filter((y) => y > 0).length,
    0,
  );
  const view = (views[title] ||= { started: true, ready: false, draws: 0, points: 0 });
  view.ready = true;
  view.draws += 1;
  view.points = Math.max(view.points, drawn);
}

export default {
  async render({ model, el }) {
    el.classList.add("grpclab-chart");
    el.style.width = "100%";
    const title = baseTitle(model);
    const views = (globalThis.__grpclabCharts ||= {});
    views[title] ||= { started: true, ready: false, draws: 0, points: 0 };
    const t0 = performance.now();
    const log = (what) =>
      console.debug(`grpclab chart ${title}: ${what} after ${Math.round(performance.now() - t0)} ms`);
    let Plotly;
    try {
      Plotly = await loadPlotly(model);
    } catch (error) {
      el.textContent = `grpclab: plotly.js did not load (${error}); re-run the cell`;
      throw error;
    }
    // Plotly sizes a plot from its element: the first draw waits until the output area
    // holds it (a ResizeObserver reports that; a busy page may take seconds).
    let attached;
    const inPage = new Promise((resolve) => (attached = resolve));
    const sizes = new ResizeObserver(() => {
      if (!el.isConnected || !el.clientWidth) return;
      if (attached) {
        attached();
        attached = null;
      } else {
        Plotly.Plots.resize(el);
      }
    });
    sizes.observe(el);
    log("plotly.js loaded");
    let drawing = null;
    let again = false;
    const draw = async () => {
      if (drawing) {
        again = true; // the loop below draws the newest state once more
        return drawing;
      }
      drawing = (async () => {
        do {
          again = false;
          const figure = model.get("figure");
          await Plotly.react(el, figure.data || [], figure.layout || {}, figure.config || {});
          record(title, figure);
        } while (again);
      })();
      try {
        await drawing;
      } finally {
        drawing = null;
      }
    };
    let shown = false;
    const onChange = () => shown && void draw();
    model.on("change:figure", onChange);
    await inPage;
    log("in the page");
    shown = true;
    await draw();
    // Tell the kernel (and a test reading the page) that this view has drawn.
    el.dataset.grpclabReady = "true";
    model.send({ event: "rendered" });
    log("drawn");
    return () => {
      sizes.disconnect();
      model.off("change:figure", onChange);
      Plotly.purge(el);
    };
  },
};
