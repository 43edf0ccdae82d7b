package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/store"
)

var errForbidden = apiError{http.StatusForbidden, "forbidden", "this route needs the admin role"}

// requireAdmin lets only admins through; it runs after requireUser, so the
// role is the user's current one in MongoDB, not the token's claim.
func (s *server) requireAdmin() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.authorizeAdmin(c) {
			c.Next()
		}
	}
}

func (s *server) authorizeAdmin(c *gin.Context) bool {
	if currentUser(c).Role != models.RoleAdmin {
		fail(c, errForbidden)
		return false
	}
	return true
}

// guardAdminPaths authenticates and authorises unmatched paths under
// /v1/admin before they get their 404 or 405.
func (s *server) guardAdminPaths() gin.HandlerFunc {
	return func(c *gin.Context) {
		p := c.Request.URL.Path
		if p != "/v1/admin" && !strings.HasPrefix(p, "/v1/admin/") {
			return
		}
		_ = s.authenticate(c) && s.authorizeAdmin(c)
	}
}

// adminUser loads the user named by the :user_id path parameter.
func (s *server) adminUser(c *gin.Context, ctx context.Context) (*models.User, error) {
	u, err := s.store.Users.ByID(ctx, c.Param("user_id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound("no such user")
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	return u, nil
}

// adminSession is a session's state with its user's email.
type adminSession struct {
	models.SessionState
	Email string `json:"email"`
}

func (s *server) sessionOf(ctx context.Context, u *models.User) (adminSession, error) {
	st, err := s.sessionView(ctx, u.ID)
	if err != nil {
		return adminSession{}, err
	}
	return adminSession{SessionState: st, Email: u.Email}, nil
}

// sessionState is the user's session as it runs, or, with none running,
// closed with the steering its next run will start from.
func (s *server) sessionState(ctx context.Context, userID string) (models.SessionState, error) {
	st, err := s.sessions.State(ctx, userID)
	if err != nil {
		return models.SessionState{}, fmt.Errorf("session state: %w", err)
	}
	if st.State == models.SessionClosed {
		q, err := s.store.Queues.Get(ctx, userID)
		if err != nil {
			return models.SessionState{}, fmt.Errorf("session steering: %w", err)
		}
		st.Paused = q.Paused
		if q.Policy.Valid() {
			st.Policy = q.Policy
		}
	}
	return st, nil
}

// sessionView is sessionState with the estimated start of each waiting
// request and the running one's estimated finish, as the session routes
// answer it.
func (s *server) sessionView(ctx context.Context, userID string) (models.SessionState, error) {
	st, err := s.sessionState(ctx, userID)
	if err != nil {
		return st, err
	}
	if len(st.Queue) > 0 || st.Running != nil {
		if eta, _, err := s.views.Estimates(ctx, st.UserID); err == nil {
			for i := range st.Queue {
				st.Queue[i].ETA = at(eta, st.Queue[i].ID)
			}
			if st.Running != nil {
				st.Running.ETA = at(eta, st.Running.ID)
			}
		}
	}
	return st, nil
}

// etaPlaces bounds the places a user's estimates follow (events.Views):
// the requests beyond show no ETA in GET /v1/session and GET
// /v1/requests/:id.
const etaPlaces = 200

func at(m map[string]events.Estimate, id string) *time.Time {
	if e, ok := m[id]; ok {
		return &e.ETA
	}
	return nil
}

// setPaused pauses or resumes userID's queue: stored first, so their next
// run starts with it whatever happens to this one, then signalled to the
// running one, if any.
func (s *server) setPaused(ctx context.Context, userID string, paused bool) error {
	if err := s.store.Queues.SetPaused(ctx, userID, paused, s.now()); err != nil {
		return fmt.Errorf("store pause: %w", err)
	}
	if paused {
		return storedForNextRun(s.sessions.Pause(ctx, userID))
	}
	return storedForNextRun(s.sessions.Resume(ctx, userID))
}

// storedForNextRun: a pause, resume or policy for a user with no running
// session is stored (the caller did it) and applies to their next run.
func storedForNextRun(err error) error {
	if errors.Is(err, starter.ErrNoSession) {
		return nil
	}
	return err
}

func (s *server) handleAdminListSessions() gin.HandlerFunc {
	return func(c *gin.Context) {
		f := starter.SessionFilter{State: c.DefaultQuery("state", "open")}
		if f.State != "open" && f.State != "closed" && f.State != "all" {
			fail(c, errBadRequest("invalid_state", "state must be open, closed or all"))
			return
		}
		if v := c.Query("paused"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				fail(c, errBadRequest("invalid_paused", "paused must be true or false"))
				return
			}
			f.Paused = &b
		}
		limit, err := s.listLimit(c)
		if err != nil {
			fail(c, err)
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		list, next, err := s.sessions.ListSessions(ctx, f, limit, c.Query("cursor"))
		if errors.Is(err, starter.ErrBadCursor) {
			fail(c, errBadRequest("invalid_cursor", "cursor is not one this API returned"))
			return
		} else if err != nil {
			fail(c, err)
			return
		}
		for i := range list {
			if u, err := s.store.Users.ByID(ctx, list[i].UserID); err == nil {
				list[i].Email = u.Email
			}
		}
		c.JSON(http.StatusOK, gin.H{"sessions": list, "next_cursor": optional(next)})
	}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *server) handleAdminShowSession() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		u, err := s.adminUser(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		st, err := s.sessionOf(ctx, u)
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, st)
	}
}

type steer int

const (
	steerPause steer = iota
	steerResume
	steerClose
)

func (s *server) handleAdminSteer(action steer) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		u, err := s.adminUser(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		if s.signalRateLimited(c, u.ID) {
			return
		}
		switch action {
		case steerPause, steerResume:
			err = s.setPaused(ctx, u.ID, action == steerPause)
		case steerClose:
			err = s.closeSession(ctx, u.ID)
		}
		s.answerSteer(c, ctx, u, err)
	}
}

// answerSteer answers an operator action with the session's new state.
func (s *server) answerSteer(c *gin.Context, ctx context.Context, u *models.User, err error) {
	if errors.Is(err, starter.ErrNoSession) {
		fail(c, errConflict("no_session", "this user has no running session"))
		return
	}
	if err != nil {
		fail(c, err)
		return
	}
	admin := currentUser(c)
	s.log.Info("operator action", "admin_id", admin.ID, "user_id", u.ID, "route", c.FullPath(),
		"workflow_id", models.SessionWorkflowID(u.ID))
	st, err := s.sessionOf(ctx, u)
	if err != nil {
		fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *server) handleAdminSetPolicy() gin.HandlerFunc {
	return func(c *gin.Context) {
		var in struct {
			Policy models.FailurePolicy `json:"policy"`
		}
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		if !in.Policy.Valid() {
			fail(c, errBadRequest("invalid_policy", "policy must be continue or pause"))
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		u, err := s.adminUser(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		if s.signalRateLimited(c, u.ID) {
			return
		}
		if err := s.store.Queues.SetPolicy(ctx, u.ID, in.Policy, s.now()); err != nil {
			fail(c, fmt.Errorf("store policy: %w", err))
			return
		}
		s.answerSteer(c, ctx, u, storedForNextRun(s.sessions.SetPolicy(ctx, u.ID, in.Policy)))
	}
}

// adminRequestView is a request with its owner, for operators.
type adminRequestView struct {
	requestView
	UserID string `json:"user_id"`
}

func adminViewOf(r *models.Request, pos int) adminRequestView {
	return adminRequestView{requestView: viewOf(r, pos), UserID: r.UserID}
}

func (s *server) adminRequest(c *gin.Context, ctx context.Context) (*models.Request, error) {
	r, err := s.store.Requests.Get(ctx, "", c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound("no such request")
	}
	if err != nil {
		return nil, fmt.Errorf("get request: %w", err)
	}
	return r, nil
}

func (s *server) handleAdminGetRequest() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.adminRequest(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, adminRequestView{requestView: s.view(ctx, r), UserID: r.UserID})
	}
}

func (s *server) handleAdminCancelRequest() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.adminRequest(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		if s.signalRateLimited(c, r.UserID) {
			return
		}
		r, err = s.cancelQueued(ctx, r.UserID, r.ID)
		if err != nil {
			fail(c, err)
			return
		}
		c.Set("request_id", r.ID)
		c.JSON(http.StatusOK, adminViewOf(r, 0))
	}
}

func (s *server) handleAdminRequeue() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.adminRequest(c, ctx)
		if err != nil {
			fail(c, err)
			return
		}
		if s.signalRateLimited(c, r.UserID) {
			return
		}
		r, err = s.requeue(ctx, r)
		if err != nil {
			fail(c, err)
			return
		}
		c.Set("request_id", r.ID)
		s.log.Info("request requeued", "admin_id", currentUser(c).ID, "request_id", r.ID, "user_id", r.UserID,
			"workflow_id", models.SessionWorkflowID(r.UserID))
		c.JSON(http.StatusAccepted, adminViewOf(r, 0))
	}
}

// requeue puts failed or cancelled request r back at the end of its
// owner's queue and returns it as it is now.
func (s *server) requeue(ctx context.Context, r *models.Request) (*models.Request, error) {
	// Already queued: either it waits in its session (nothing to do:
	// 409), or an earlier requeue stopped before its inbox entry was
	// written and this retry must write it.
	if r.Status == models.StatusQueued {
		st, err := s.sessions.State(ctx, r.UserID)
		if err != nil {
			return nil, err
		}
		for _, e := range st.Queue {
			if e.ID == r.ID {
				return nil, errConflict("not_requeueable", "the request is already waiting in its queue")
			}
		}
	} else {
		err := s.store.Requests.Requeue(ctx, r.ID)
		if errors.Is(err, store.ErrConflict) {
			return nil, errConflict("not_requeueable", "only a failed or cancelled request can be requeued")
		} else if err != nil {
			return nil, fmt.Errorf("requeue: %w", err)
		}
	}
	if err := s.inbox.Requeue(ctx, r); err != nil {
		return nil, fmt.Errorf("requeue entry (retry the requeue): %w", err)
	}
	r, err := s.store.Requests.Get(ctx, "", r.ID)
	if err != nil {
		return nil, fmt.Errorf("reload request: %w", err)
	}
	return r, nil
}

func (s *server) handleAdminListUsers() gin.HandlerFunc {
	return func(c *gin.Context) {
		limit, err := s.listLimit(c)
		if err != nil {
			fail(c, err)
			return
		}
		after := ""
		if cur := c.Query("cursor"); cur != "" {
			raw, err := base64.RawURLEncoding.DecodeString(cur)
			if _, perr := uuid.ParseBytes(raw); err != nil || perr != nil {
				fail(c, errBadRequest("invalid_cursor", "cursor is not one this API returned"))
				return
			}
			after = string(raw)
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		users, err := s.store.Users.List(ctx, limit, after)
		if err != nil {
			fail(c, fmt.Errorf("list users: %w", err))
			return
		}
		var next *string
		if len(users) == limit {
			cur := base64.RawURLEncoding.EncodeToString([]byte(users[len(users)-1].ID))
			next = &cur
		}
		c.JSON(http.StatusOK, gin.H{"users": users, "next_cursor": next})
	}
}

func (s *server) handleAdminSetDisabled(disabled bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		id := c.Param("id")
		if id == currentUser(c).ID && disabled {
			fail(c, errConflict("self_disable", "an admin cannot disable their own account"))
			return
		}
		err := s.store.Users.SetDisabled(ctx, id, disabled)
		if errors.Is(err, store.ErrNotFound) {
			fail(c, errNotFound("no such user"))
			return
		} else if err != nil {
			fail(c, fmt.Errorf("set disabled: %w", err))
			return
		}
		if disabled {
			// Access tokens die with the per-call user check; refresh
			// tokens are revoked here.
			if err := s.store.Tokens.RevokeUser(ctx, id); err != nil {
				fail(c, fmt.Errorf("revoke tokens: %w", err))
				return
			}
			// Their queue stops too: what they submitted waits, visible to
			// operators, until one resumes it (enabling the account does
			// not: an operator decides what of theirs runs).
			if err := s.setPaused(ctx, id, true); err != nil {
				fail(c, fmt.Errorf("pause the disabled user's queue (retry the disable): %w", err))
				return
			}
		}
		u, err := s.store.Users.ByID(ctx, id)
		if err != nil {
			fail(c, fmt.Errorf("reload user: %w", err))
			return
		}
		s.log.Info("user disabled flag set", "admin_id", currentUser(c).ID, "user_id", id, "disabled", disabled)
		c.JSON(http.StatusOK, u)
	}
}

func (s *server) handleAdminStats() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		users, err := s.store.Users.Count(ctx)
		if err != nil {
			fail(c, fmt.Errorf("count users: %w", err))
			return
		}
		byStatus, err := s.store.Requests.CountByStatus(ctx)
		if err != nil {
			fail(c, fmt.Errorf("count requests: %w", err))
			return
		}
		open, err := s.sessions.CountSessions(ctx, starter.SessionFilter{State: "open"})
		if err != nil {
			fail(c, err)
			return
		}
		paused := true
		nPaused, err := s.sessions.CountSessions(ctx, starter.SessionFilter{State: "open", Paused: &paused})
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{
			"users":    users,
			"requests": byStatus,
			"sessions": gin.H{"open": open, "paused": nPaused},
		})
	}
}
