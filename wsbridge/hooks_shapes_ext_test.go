package wsbridge_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/deploytest"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/herald-io/herald/internal/tlstest"
)

// TestHooksInEveryShape: in serve and split mode, demo and production
// (API keys, JWT keys, TLS; the hooks over TLS, mTLS in the split
// production shape, with a key the backend checks), the bridge, wherever
// it runs, calls the backend: a cookie session connects, the subscribe
// hook's info reaches presence, a publication is replaced, an rpc is
// answered, and a JWT browser beside it is not affected. The HTTP form
// runs in the serve shapes, gRPC in the split ones.
func TestHooksInEveryShape(t *testing.T) {
	for _, shape := range deploytest.Shapes {
		t.Run(strings.ReplaceAll(shape.String(), "/", "_"), func(t *testing.T) {
			opts := hooktest.Options{}
			var files *tlstest.Files
			if shape.Production {
				files = tlstest.NewFiles(t)
				opts = hooktest.Options{APIKey: "hooks-key-0123456789abcdef", TLS: files, MTLS: shape.Split}
			}
			s := hooktest.Start(t, opts)
			d := deploytest.Start(t, shape, func(c *config.Config) {
				room := config.DefaultNamespace("room")
				room.SubscribeHook, room.PublishHook = true, true
				chat := config.DefaultNamespace("chat")
				chat.AllowPublish, chat.AllowAnonymous = true, true
				c.Namespaces = []config.Namespace{room, chat}
				h := &c.Hooks
				if shape.Split {
					h.GRPCAddr = s.GRPCAddr
				} else {
					h.HTTPURL = s.HTTPURL
				}
				h.Connect, h.RPCMethods, h.Cookies = true, []string{"whoami"}, []string{"session"}
				if shape.Production {
					h.APIKey, h.CAFile = opts.APIKey, files.CAFile
					if shape.Split {
						h.CertFile, h.KeyFile = files.ClientCert, files.ClientKey
					}
				}
			})
			c := dialDeployment(t, d, "session="+s.Login("ann"))
			r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{}}})
			if r.GetConnect().GetUser() != "ann" {
				t.Fatalf("cookie connect: %v", r)
			}
			if r := c.subscribe("room:shapes", nil); r.GetSubscribe() == nil {
				t.Fatalf("subscribe: %v", r)
			}
			if r := c.request(publishJSON("room:shapes", `{"text":"replace"}`)); r.GetPublish() == nil {
				t.Fatalf("publish: %v", r)
			}
			if f := c.nextPub("room:shapes").GetData().GetStructValue().GetFields(); f["text"].GetStringValue() != "REPLACE" || f["by"].GetStringValue() != "ann" {
				t.Fatalf("replaced publication: %v", f)
			}
			if r := c.request(rpcFrame("whoami", "{}")); r.GetRpc().GetData().GetStructValue().GetFields()["user"].GetStringValue() != "ann" {
				t.Fatalf("rpc: %v", r)
			}
			eventually(t, "the subscribe hook's info in presence", func() bool {
				r := c.request(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Presence{Presence: &heraldv1.PresenceFrame{Channel: "room:shapes"}}})
				cl := r.GetPresence().GetClients()
				return len(cl) == 1 && cl[0].GetInfo().GetStructValue().GetFields()["role"].GetStringValue() == "member"
			})
			if req, ok := s.Last("connect").(*hooksv1.ConnectRequest); !ok || req.Session.Bridge == "" {
				t.Fatalf("connect request: %v", s.Last("connect"))
			}

			// A JWT browser (production) or an anonymous one (demo: no
			// JWT key, so the hook decides, and refuses a stranger).
			j := dialDeployment(t, d, "")
			j.send(&heraldv1.ClientFrame{Body: &heraldv1.ClientFrame_Connect{Connect: &heraldv1.ConnectFrame{Token: d.Token(t, user(d, "jo"), nil)}}})
			r = j.waitFor("connect or disconnect", func(f *heraldv1.ServerFrame) bool { return f.GetConnect() != nil || f.GetDisconnect() != nil })
			if shape.Production {
				if r.GetConnect().GetUser() != "jo" {
					t.Fatalf("JWT beside the hooks: %v", r)
				}
				if r := j.subscribe("chat:shapes", nil); r.GetSubscribe() == nil {
					t.Fatalf("JWT subscribe: %v", r)
				}
			} else if r.GetDisconnect().GetCode() != 4001 {
				t.Fatalf("a stranger without a token: %v", r)
			}
		})
	}
}

func user(d *deploytest.Deployment, name string) string {
	if d.Production {
		return name
	}
	return ""
}

// dialDeployment opens a WebSocket to d's bridge with a Cookie header.
func dialDeployment(t *testing.T, d *deploytest.Deployment, cookie string) *client {
	t.Helper()
	ws := d.DialWSHeader(t, "", http.Header{"Cookie": {cookie}})
	return &client{t: t, ws: ws}
}
