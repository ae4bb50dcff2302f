package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/herald-io/herald/client"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// clientFlags are the flags shared by the client commands.
type clientFlags struct {
	addr     string
	apiKey   string
	tls      bool
	caFile   string
	certFile string
	keyFile  string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	addr := os.Getenv("HERALD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7400"
	}
	fs.StringVar(&c.addr, "addr", addr, "gRPC address of a Herald node ($HERALD_ADDR)")
	fs.StringVar(&c.apiKey, "api-key", os.Getenv("HERALD_API_KEY"), "API key ($HERALD_API_KEY)")
	fs.BoolVar(&c.tls, "tls", false, "connect over TLS (implied by the other TLS flags)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of the CAs that sign the node's certificate (default: the system's)")
	fs.StringVar(&c.certFile, "cert-file", "", "client certificate (PEM), for a node that requires mTLS")
	fs.StringVar(&c.keyFile, "key-file", "", "client certificate's key (PEM)")
}

// dial returns a client of the node the flags name.
func (c *clientFlags) dial(retry client.Retry) (*client.Client, error) {
	opts := []client.Option{client.WithRetry(retry)}
	if c.apiKey != "" {
		opts = append(opts, client.WithAPIKey(c.apiKey))
	}
	if c.tls {
		opts = append(opts, client.WithTLS(nil))
	}
	if c.caFile != "" {
		opts = append(opts, client.WithCAFile(c.caFile))
	}
	if c.certFile != "" || c.keyFile != "" {
		opts = append(opts, client.WithClientCert(c.certFile, c.keyFile))
	}
	return client.Dial(c.addr, opts...)
}

// explain turns a call's error into what the user reads: where the node
// was looked for and how to point elsewhere when none answered there,
// "Code: message" otherwise.
func explain(c *client.Client, err error) error {
	if client.CodeOf(err) == codes.Unavailable && c.Conn().GetState() != connectivity.Ready {
		cause := status.Convert(err).Message()
		if i := strings.LastIndex(cause, ": "); i >= 0 {
			cause = strings.TrimSuffix(cause[i+2:], `"`)
		}
		return fmt.Errorf("cannot reach a Herald node at %s (%s): start one with `herald serve`, or point --addr (or $HERALD_ADDR) at one", c.Addr(), cause)
	}
	return statusErr(err)
}

var printJSON = protojson.MarshalOptions{UseProtoNames: true}

// publishRetry: a few quick attempts, so that a node that is restarting
// is waited for briefly and an address with nothing behind it is
// reported at once.
var publishRetry = client.Retry{Attempts: 3}

func publish(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("herald publish", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	key := fs.String("idempotency-key", "", "idempotency key: a retry with the same key publishes nothing twice (default: a random one, so that the command's own retries are safe)")
	binary := fs.Bool("binary", false, "send the payload as binary bytes instead of JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald publish [flags] CHANNEL PAYLOAD\n\nPAYLOAD is JSON (or any bytes with --binary); \"-\" reads it from stdin.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("want CHANNEL and PAYLOAD")
	}
	body := []byte(fs.Arg(1))
	if fs.Arg(1) == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		body = b
	}
	msg := client.Message{Channel: fs.Arg(0), IdempotencyKey: *key}
	if *binary {
		msg.Binary = body
	} else {
		if err := payload.Check(body); err != nil {
			return fmt.Errorf("payload is %v (quote strings: '\"hi\"'; or use --binary)", err)
		}
		msg.JSON = body
	}
	c, err := cf.dial(publishRetry)
	if err != nil {
		return err
	}
	defer c.Close()
	ack, err := c.Publish(ctx, msg)
	if err != nil {
		return explain(c, err)
	}
	out, _ := printJSON.Marshal(&heraldv1.PublishResponse{
		Position:  &heraldv1.StreamPosition{Offset: ack.Position.Offset, Epoch: ack.Position.Epoch},
		Duplicate: ack.Duplicate,
	})
	fmt.Fprintln(stdout, string(out))
	return nil
}

func subscribe(ctx context.Context, args []string, stdout io.Writer) error {
	return subscribeTo(ctx, args, stdout, os.Stderr)
}

// subscribeRetry: resubscribe after 250 ms, backing off to 5 s.
var subscribeRetry = client.Retry{Initial: 250 * time.Millisecond, Max: 5 * time.Second}

func subscribeTo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald subscribe", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	since := fs.String("since", "", "resume after a position, as OFFSET@EPOCH (e.g. 42@3f2a9c1b)")
	presence := fs.Bool("presence", false, "also print join and leave events")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald subscribe [flags] CHANNEL\n\nPrints one JSON object per event until interrupted. When the server ends\nthe stream (draining, continuity lost, too slow) or cannot be reached, it\nsays so on stderr and resumes from the last position printed, with backoff.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want CHANNEL")
	}
	opts := client.SubscribeOptions{PresenceEvents: *presence}
	if *since != "" {
		pos, err := client.ParsePosition(*since)
		if err != nil {
			return fmt.Errorf("--since %q: want OFFSET@EPOCH", *since)
		}
		opts.Since = &pos
	}
	c, err := cf.dial(subscribeRetry)
	if err != nil {
		return err
	}
	defer c.Close()
	// The next `subscribed` line after a resume says whether the gap was
	// recovered.
	opts.OnRetry = func(err error, delay time.Duration) {
		fmt.Fprintf(stderr, "herald: %v; retrying in %v\n", explain(c, err), delay.Round(time.Millisecond))
	}
	sub := c.Subscribe(ctx, fs.Arg(0), opts)
	defer sub.Close()
	for {
		ev, err := sub.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return explain(c, err)
		}
		// Publications with their JSON payload as `data`, exactly as
		// published (payload.AppendMessage), everything else as protojson.
		out, err := payload.AppendMessage(nil, ev.SubscribeResponse)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(out))
	}
}

// statusErr shortens a gRPC error to "code: message".
func statusErr(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	return err
}
