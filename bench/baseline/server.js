// The seed's Express server, kept as the design this project grew from wrote it: cors with
// an origin allowlist, express.json, express-rate-limit, and fetch to Retell's
// create-web-call with the server-side key. Only the upstream URL, the allowlist and the
// limit come from the environment so the benchmark can point it at the fake Retell on
// loopback and set the limit out of the way (or down to 1).
const express = require('express');
const cors = require('cors');
const rateLimit = require('express-rate-limit');

const app = express();
const RETELL_API_BASE = process.env.RETELL_API_BASE || 'https://api.retellai.com';
const allowedOrigins = (process.env.ALLOWED_ORIGINS || 'https://client-website-1.com').split(',');

app.use('/api', cors({
  origin: function (origin, callback) {
    // Allow requests with no origin (mobile apps, etc)
    if (!origin) return callback(null, true);
    if (allowedOrigins.includes(origin)) {
      return callback(null, true);
    }
    // For development, you might want to allow localhost
    if (origin && origin.includes('localhost')) {
      return callback(null, true);
    }
    callback(new Error('Not allowed by CORS'));
  },
  credentials: true,
  methods: ['GET', 'POST', 'OPTIONS'],
  allowedHeaders: ['Content-Type', 'Authorization'],
}));

app.use(express.json());

const createWebCallLimiter = rateLimit({
  windowMs: 15 * 60 * 1000, // 15 minutes
  max: Number(process.env.RATE_LIMIT_MAX || 100), // limit each IP to max requests per windowMs
  message: 'Too many call creation requests, please try again later',
});
app.use('/api/create-web-call', createWebCallLimiter);

app.post('/api/create-web-call', async (req, res) => {
  try {
    const { agent_id } = req.body;
    if (!agent_id) {
      return res.status(400).json({ error: 'agent_id is required' });
    }
    const response = await fetch(`${RETELL_API_BASE}/v3/create-web-call`, {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${process.env.RETELL_API_KEY}`,
        'Content-Type': 'application/json',
      },
      body: JSON.stringify({ agent_id }),
    });
    if (!response.ok) {
      throw new Error(`Retell AI API error: ${response.status}`);
    }
    const data = await response.json();
    res.json({ access_token: data.access_token });
  } catch (error) {
    console.error('Create web call error:', error);
    res.status(500).json({ error: 'Failed to create web call', details: error.message });
  }
});

app.get('/api/health', (req, res) => {
  res.json({ status: 'ok', timestamp: new Date().toISOString() });
});

const PORT = process.env.PORT || 3001;
app.listen(PORT, '127.0.0.1', () => {
  console.log(`Retell proxy server running on port ${PORT}`);
});
