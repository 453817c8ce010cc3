package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Colours per responder; unpinned lines are dashed.
var respColor = map[string]color.Color{
	K0: color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // blue
	Kd: color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, // grey
	P:  color.RGBA{0xd6, 0x27, 0x28, 0xff}, // red
	E:  color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // green
}

// tickLabels marks 1-2-5 ticks on a log axis, in µs, ms or s.
type tickLabels struct{}

func (tickLabels) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, v := range logTicks(lo, hi) {
		label := "" // 2 and 5: minor ticks
		if m := v / math.Pow(10, math.Floor(math.Log10(v)+1e-9)); m < 1.5 {
			label = tickLabel(v)
		}
		ts = append(ts, plot.Tick{Value: v, Label: label})
	}
	return ts
}

// tickLabel renders a power of ten of µs: "10 µs", "1 ms", "1 s".
func tickLabel(us float64) string {
	switch {
	case us >= 1e6:
		return strconv.FormatFloat(us/1e6, 'g', -1, 64) + " s"
	case us >= 1e3:
		return strconv.FormatFloat(us/1e3, 'g', -1, 64) + " ms"
	case us >= 1:
		return strconv.FormatFloat(us, 'g', -1, 64) + " µs"
	}
	return strconv.FormatFloat(us*1e3, 'g', -1, 64) + " ns"
}

// cdfPanel makes one log-x CDF plot of the series of scope and kind, over
// [xmin, xmax] µs.
func cdfPanel(r *Results, scope, kind, title string, xmin, xmax float64) (*plot.Plot, int, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "request → reply round trip (log scale)"
	p.Y.Label.Text = "fraction of requests answered within x"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = tickLabels{}
	p.X.Min, p.X.Max = xmin, xmax
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	// Bottom, a third of the way from the right: between the µs curves
	// and Kd's broadcast ones.
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.YOffs = vg.Points(30)
	p.Legend.XOffs = -3.1 * vg.Inch
	lines := 0
	for _, s := range sortedSeries(r.Latency) {
		if s.Scope != scope || s.Kind != kind || len(s.Samples) == 0 {
			continue
		}
		xs, ys := cdfPoints(s.Samples, 1e3, 400)
		pts := make(plotter.XYs, len(xs))
		for i := range xs {
			pts[i].X, pts[i].Y = xs[i], ys[i]
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, 0, err
		}
		l.LineStyle.Width = vg.Points(1.5)
		l.LineStyle.Color = respColor[s.Responder]
		if s.Mode == "unpinned" {
			l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s %s (n=%d)", s.Responder, s.Mode, len(s.Samples)), l)
		lines++
	}
	return p, lines, nil
}

// plotCDF writes the round-trip CDFs of K0, Kd, P and E (one panel per request
// kind, and one for the scale rounds) as SVG.
func plotCDF(r *Results, path string, png bool) error {
	// One x range for all panels, so that they compare at a glance.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, s := range r.Latency {
		for _, v := range s.Samples {
			xmin, xmax = math.Min(xmin, float64(v)/1e3), math.Max(xmax, float64(v)/1e3)
		}
	}
	if math.IsInf(xmin, 0) {
		return nil // nothing measured
	}
	xmin, xmax = math.Pow(10, math.Floor(math.Log10(xmin))), math.Pow(10, math.Ceil(math.Log10(xmax)))
	var panels []*plot.Plot
	for _, c := range []struct{ scope, kind, title string }{
		{"pod", "broadcast", "broadcast requests (a pod's first ARP)"},
		{"pod", "unicast", "unicast re-probes (to ee:ee:ee:ee:ee:ee)"},
		{"scale", "broadcast", fmt.Sprintf("broadcast, %d of %d interfaces", r.Config.ScaleSample, r.Config.Burst+1)},
	} {
		p, n, err := cdfPanel(r, c.scope, c.kind, c.title, xmin, xmax)
		if err != nil {
			return err
		}
		if n > 0 {
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		return nil // nothing measured
	}
	w, h := 9*vg.Inch, vg.Length(len(panels))*3.5*vg.Inch
	draw1 := func(c vg.CanvasSizer) {
		tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadY: vg.Points(20), PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(20)}
		rows := make([][]*plot.Plot, len(panels))
		for i, p := range panels {
			rows[i] = []*plot.Plot{p}
		}
		canvases := plot.Align(rows, tiles, draw.New(c))
		for i, p := range panels {
			p.Draw(canvases[i][0])
		}
	}
	svg := vgsvg.New(w, h)
	draw1(svg)
	if err := writeTo(path, svg); err != nil {
		return err
	}
	if png {
		img := vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
		draw1(img)
		return writeTo(strings.TrimSuffix(path, ".svg")+".png", img)
	}
	return nil
}

func writeTo(path string, w io.WriterTo) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
