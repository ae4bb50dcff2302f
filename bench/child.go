package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// clientSet is the WebSocket clients of a run: a group in this process, or
// groups in child processes.
type clientSet interface {
	// connect opens every client and reports the connect phase.
	connect(ctx context.Context) (*groupResult, error)
	// mark starts the measured window (the CPU baseline of children).
	mark(ctx context.Context) error
	// drain waits for expected deliveries (indexed by global client; nil
	// for none) up to wait, and reports everything; its CPU covers the
	// window since mark.
	drain(ctx context.Context, expected []int64, wait time.Duration) (*groupResult, error)
	// close closes every client.
	close()
}

// localSet is a group in this process.
type localSet struct{ g *group }

func (l *localSet) connect(ctx context.Context) (*groupResult, error) {
	l.g.connect(ctx)
	return l.g.result(false), ctx.Err()
}

func (l *localSet) mark(context.Context) error { return nil }

func (l *localSet) drain(ctx context.Context, expected []int64, wait time.Duration) (*groupResult, error) {
	return l.g.drain(ctx, sliceFor(expected, l.g.spec), wait), nil
}

func (l *localSet) close() { l.g.close() }

func sliceFor(expected []int64, s groupSpec) []int64 {
	if expected == nil {
		return nil
	}
	return expected[s.Base : s.Base+s.N]
}

// The parent and a child talk in JSON lines: the parent writes the spec,
// then commands; the child answers "ready" after connecting and "result"
// after draining. When its stdin closes, a child closes its clients and
// exits, so children never outlive their parent.
type childCmd struct {
	Cmd      string        `json:"cmd"` // mark, drain, close
	Expected []int64       `json:"expected,omitempty"`
	Wait     time.Duration `json:"wait,omitempty"`
}

type childMsg struct {
	Ready  *groupResult `json:"ready,omitempty"`
	Result *groupResult `json:"result,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// runChild is the body of a child process (herald bench -child).
func runChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReader(stdin)
	enc := json.NewEncoder(stdout)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("child: reading spec: %w", err)
	}
	var spec groupSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("child: bad spec: %w", err)
	}
	if _, err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "bench child: raising open-files limit:", err)
	}
	g := newGroup(spec)
	defer g.close()
	g.connect(ctx)
	if err := enc.Encode(childMsg{Ready: g.result(false)}); err != nil {
		return err
	}
	cpu0 := cpuSeconds()
	var resumeGC func() (uint64, uint64)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return nil // parent gone or done
		}
		var cmd childCmd
		if err := json.Unmarshal(line, &cmd); err != nil {
			return fmt.Errorf("child: bad command: %w", err)
		}
		switch cmd.Cmd {
		case "mark":
			if resumeGC != nil {
				resumeGC() // a mark without a drain
			}
			resumeGC = pauseGC()
			cpu0 = cpuSeconds()
		case "drain":
			r := g.drain(ctx, cmd.Expected, cmd.Wait)
			r.CPU = cpuSeconds() - cpu0
			if resumeGC != nil {
				r.GCAlloc, r.GCForced = resumeGC()
				resumeGC = nil
			}
			if err := enc.Encode(childMsg{Result: r}); err != nil {
				return err
			}
		case "close":
			return nil
		}
	}
}

// procSet is groups in child processes.
type procSet struct {
	specs []groupSpec
	kids  []*kid
}

type kid struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	spec groupSpec
}

func (p *procSet) connect(ctx context.Context) (*groupResult, error) {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	for _, s := range p.specs {
		cmd := exec.Command(exe, "bench", "-child")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting child: %w", err)
		}
		k := &kid{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20), spec: s}
		p.kids = append(p.kids, k)
		b, _ := json.Marshal(s)
		if _, err := in.Write(append(b, '\n')); err != nil {
			return nil, fmt.Errorf("child: %w", err)
		}
	}
	msgs, err := p.collect(ctx)
	if err != nil {
		return nil, err
	}
	total := &groupResult{}
	for _, m := range msgs {
		if m.Ready == nil {
			return nil, errors.New("child: expected ready")
		}
		total.merge(m.Ready)
	}
	return total, nil
}

// collect reads one message from every child.
func (p *procSet) collect(ctx context.Context) ([]childMsg, error) {
	msgs := make([]childMsg, len(p.kids))
	errs := make([]error, len(p.kids))
	var wg sync.WaitGroup
	for i, k := range p.kids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := k.out.ReadBytes('\n')
			if err != nil {
				errs[i] = fmt.Errorf("child %d: %w", i, err)
				return
			}
			if err := json.Unmarshal(line, &msgs[i]); err != nil {
				errs[i] = fmt.Errorf("child %d: %w", i, err)
				return
			}
			if msgs[i].Error != "" {
				errs[i] = fmt.Errorf("child %d: %s", i, msgs[i].Error)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.close()
		<-done
		return nil, ctx.Err()
	}
	return msgs, errors.Join(errs...)
}

func (p *procSet) send(cmd childCmd, expected []int64) error {
	var errs []error
	for _, k := range p.kids {
		c := cmd
		c.Expected = sliceFor(expected, k.spec)
		b, _ := json.Marshal(c)
		if _, err := k.in.Write(append(b, '\n')); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *procSet) mark(context.Context) error { return p.send(childCmd{Cmd: "mark"}, nil) }

func (p *procSet) drain(ctx context.Context, expected []int64, wait time.Duration) (*groupResult, error) {
	if err := p.send(childCmd{Cmd: "drain", Wait: wait}, expected); err != nil {
		return nil, err
	}
	msgs, err := p.collect(ctx)
	if err != nil {
		return nil, err
	}
	total := &groupResult{}
	for _, m := range msgs {
		if m.Result == nil {
			return nil, errors.New("child: expected result")
		}
		total.merge(m.Result)
		total.Received = placeReceived(total.Received, m.Result)
	}
	return total, nil
}

// placeReceived copies r's per-client counts to their global indexes.
func placeReceived(all []int64, r *groupResult) []int64 {
	end := r.Base + len(r.Received)
	if len(all) < end {
		all = append(all, make([]int64, end-len(all))...)
	}
	copy(all[r.Base:end], r.Received)
	return all
}

func (p *procSet) close() {
	_ = p.send(childCmd{Cmd: "close"}, nil)
	for _, k := range p.kids {
		_ = k.in.Close()
	}
	for _, k := range p.kids {
		done := make(chan struct{})
		go func() { _ = k.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = k.cmd.Process.Kill()
			<-done
		}
	}
	p.kids = nil
}
