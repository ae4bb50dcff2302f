package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
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

// credentials returns the transport credentials the flags ask for.
func (c *clientFlags) credentials() (credentials.TransportCredentials, error) {
	if !c.tls && c.caFile == "" && c.certFile == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate found", c.caFile)
		}
	}
	if c.certFile != "" || c.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file/--key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func (c *clientFlags) dial(ctx context.Context) (heraldv1.HeraldServiceClient, context.Context, func(), error) {
	creds, err := c.credentials()
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, nil, err
	}
	if c.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.apiKey)
	}
	return heraldv1.NewHeraldServiceClient(conn), ctx, func() { _ = conn.Close() }, nil
}

var printJSON = protojson.MarshalOptions{UseProtoNames: true}

func publish(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("herald publish", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	key := fs.String("idempotency-key", "", "idempotency key: a retry with the same key publishes nothing twice")
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
	req := &heraldv1.PublishRequest{Channel: fs.Arg(0), IdempotencyKey: *key}
	if *binary {
		req.Payload = &heraldv1.PublishRequest_Binary{Binary: body}
	} else {
		if err := payload.Check(body); err != nil {
			return fmt.Errorf("payload is %v (quote strings: '\"hi\"'; or use --binary)", err)
		}
		// As its text: the node keeps its numbers and key order.
		req.Payload = &heraldv1.PublishRequest_Json{Json: string(body)}
	}
	client, ctx, closeConn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := client.Publish(ctx, req)
	if err != nil {
		return statusErr(err)
	}
	out, _ := printJSON.Marshal(resp)
	fmt.Fprintln(stdout, string(out))
	return nil
}

func subscribe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("herald subscribe", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	since := fs.String("since", "", "resume after a position, as OFFSET@EPOCH (e.g. 42@3f2a9c1b)")
	presence := fs.Bool("presence", false, "also print join and leave events")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald subscribe [flags] CHANNEL\n\nPrints one JSON object per event until interrupted. When the server ends\nthe stream (draining, continuity lost, too slow), it resumes from the last\nposition printed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want CHANNEL")
	}
	req := &heraldv1.SubscribeRequest{Channel: fs.Arg(0), PresenceEvents: *presence}
	if *since != "" {
		off, epoch, _ := strings.Cut(*since, "@")
		n, err := strconv.ParseUint(off, 10, 64)
		if err != nil {
			return fmt.Errorf("--since %q: want OFFSET@EPOCH", *since)
		}
		req.Since = &heraldv1.StreamPosition{Offset: n, Epoch: epoch}
	}
	client, ctx, closeConn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	// A stream the server ends for a reason a resume can fix (node
	// draining, continuity lost, too slow, unreachable) is resumed from the
	// last position printed; the next `subscribed` line says whether the
	// gap was recovered.
	delay := 250 * time.Millisecond
	for {
		err := tail(ctx, client, req, stdout)
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Aborted, codes.Unavailable, codes.ResourceExhausted:
		default:
			return statusErr(err)
		}
		fmt.Fprintf(os.Stderr, "herald: %v; resuming in %v\n", statusErr(err), delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// tail prints one subscription's events until it ends, keeping req.Since
// at the last publication printed.
func tail(ctx context.Context, client heraldv1.HeraldServiceClient, req *heraldv1.SubscribeRequest, stdout io.Writer) error {
	stream, err := client.Subscribe(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return status.Error(codes.Unavailable, "stream ended")
			}
			return err
		}
		switch {
		case ev.GetSubscribed() != nil && req.Since == nil:
			req.Since = ev.GetSubscribed().GetPosition()
		case ev.GetPublication() != nil:
			p := ev.GetPublication()
			req.Since = &heraldv1.StreamPosition{Offset: p.Offset, Epoch: p.Epoch}
		}
		// Publications with their JSON payload as `data`, exactly as
		// published (payload.AppendMessage), everything else as protojson.
		out, err := payload.AppendMessage(nil, ev)
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
