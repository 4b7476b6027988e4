// git-http-server: bare Git repositories over HTTP on loopback, for the local
// Flux controllers (cluster/flux.sh). The protocol is git's own: each request
// runs `git http-backend` (git's smart-HTTP CGI program, the one Apache and
// nginx front in production) through Go's standard CGI host, net/http/cgi.
// Nothing here speaks the Git protocol; this file only routes, logs, checks
// basic auth and works around one limit of net/http/cgi (no chunked bodies).
//
//	git-http-server -listen 127.0.0.1:PORT -root DIR [-auth-file FILE]
//
// DIR/NAME.git is served at http://127.0.0.1:PORT/NAME.git (clone, fetch,
// push; protocol v0, v1 and v2). Repositories are not created on demand:
// `git init --bare DIR/NAME.git` (cluster/flux.sh --dir D repo NAME).
//
// Without -auth-file, anyone on loopback may fetch and push. With it (one
// line, "user:password"), every request needs those credentials as HTTP
// basic auth, as with Flux's gittestserver Auth(); a GitRepository then
// needs a secretRef with username and password.
package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A pushed pack larger than git's http.postBuffer (1 MiB) comes chunked;
// net/http/cgi refuses chunked bodies, so they are read whole first.
const maxChunkedBody = 1 << 30

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	root := flag.String("root", "", "directory holding the bare repositories (NAME.git)")
	backend := flag.String("backend", "", "path of git-http-backend (default: $(git --exec-path)/git-http-backend)")
	authFile := flag.String("auth-file", "", `file with one line "user:password": require HTTP basic auth`)
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)

	if *root == "" {
		log.Fatal("-root is required")
	}
	dir, err := filepath.Abs(*root)
	if err != nil {
		log.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		log.Fatalf("-root %s: not a directory", dir)
	}
	if *backend == "" {
		out, err := exec.Command("git", "--exec-path").Output()
		if err != nil {
			log.Fatalf("git --exec-path: %v (is git installed?)", err)
		}
		*backend = filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	}
	if _, err := os.Stat(*backend); err != nil {
		log.Fatalf("git http-backend: %v", err)
	}

	var user, password string
	if *authFile != "" {
		b, err := os.ReadFile(*authFile)
		if err != nil {
			log.Fatal(err)
		}
		u, p, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
		if !ok || u == "" {
			log.Fatalf("-auth-file %s: want one line user:password", *authFile)
		}
		user, password = u, p
	}

	env := []string{
		"GIT_PROJECT_ROOT=" + dir,
		// Serve every repository under the root, without git-daemon-export-ok.
		"GIT_HTTP_EXPORT_ALL=1",
		// The repositories are made by this machine's user for this machine's
		// user; no system or global git config applies to the server side.
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME=" + dir,
	}
	if user == "" {
		// http-backend allows push only to an authenticated user
		// (REMOTE_USER) unless http.receivepack is set.
		env = append(env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.receivepack", "GIT_CONFIG_VALUE_0=true")
	}
	backendHandler := &cgi.Handler{
		Path:   *backend,
		Root:   "/",
		Dir:    dir,
		Env:    env,
		Logger: log.Default(),
		Stderr: os.Stderr,
	}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := *backendHandler
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			h.Env = append(append([]string{}, h.Env...), "REMOTE_USER="+u, "AUTH_TYPE=Basic")
		}
		if len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked" {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxChunkedBody))
			if err != nil {
				http.Error(w, "reading request body: "+err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		h.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: logged(handler), ReadHeaderTimeout: 30 * time.Second}
	auth := "none (anonymous fetch and push)"
	if user != "" {
		auth = "basic, user " + user
	}
	log.Printf("serving %s/*.git at http://%s/ (git http-backend %s; auth: %s)", dir, ln.Addr(), *backend, auth)
	fmt.Printf("http://%s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	log.Print("stopped")
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// logged writes one line per request: method, path and query, status,
// response bytes, time taken, and the git client's User-Agent.
func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		log.Printf("%s %s %s -> %d %dB %s %q", r.RemoteAddr, r.Method, r.URL.RequestURI(), rec.status,
			rec.bytes, time.Since(start).Round(time.Millisecond), r.UserAgent())
	})
}
