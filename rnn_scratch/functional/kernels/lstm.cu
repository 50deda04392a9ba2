// The LSTM step, fused: LSTMFast.forward_step / backward_step of lstm.py, one thread per (row b, unit j).
// Gate rows in the fast path's order (o, i, f, g); the sigmoid rows hold -a (weights pre-scaled by -1).
extern "C" __global__ void lstm_forward_step(
    real* gates, const real* a_hh,            // (B, 4H): -a (o, i, f), a (g) of x and of h_{t-1}; out o, i, f, g
    const real* h_prev, const real* c_prev,   // (B, H)
    real* h_new, real* c_new, real* tanh_c,   // (B, H)
    const bool* valid, int has_mask, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    real* gates_t = gates + (size_t)b * 4 * H;
    const real* a_hh_t = a_hh + (size_t)b * 4 * H;
    real o = 1 / (1 + exp(gates_t[j] + a_hh_t[j]));             // sigma(a) = 1 / (1 + exp(-a))
    real i = 1 / (1 + exp(gates_t[H + j] + a_hh_t[H + j]));
    real f = 1 / (1 + exp(gates_t[2 * H + j] + a_hh_t[2 * H + j]));
    real g = tanh(gates_t[3 * H + j] + a_hh_t[3 * H + j]);
    real c = f * c_prev[k] + i * g;                               // c_t = f * c_{t-1} + i * g
    real tc = tanh(c);
    gates_t[j] = o; gates_t[H + j] = i; gates_t[2 * H + j] = f; gates_t[3 * H + j] = g;
    tanh_c[k] = tc;
    bool keep = !has_mask || valid[b];                            // padded steps carry the state through
    c_new[k] = keep ? c : c_prev[k];
    h_new[k] = keep ? o * tc : h_prev[k];                         // h_t = o * tanh(c_t)
}

extern "C" __global__ void lstm_backward_step(
    const real* gates,                                          // (B, 4H) o, i, f, g
    const real* h_prev, const real* c_prev, const real* tanh_c, // (B, H) each
    const real* dout_t,                                         // (B, H) or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,                        // dh = dh_carry + dh_gemm (+ dout); carry out
    real* dc,                                                   // in dL/dc_t, out dL/dc_{t-1}
    real* dgates,                                               // (B, 4H) out: da_o, da_i, da_f, da_g
    const bool* valid, int has_mask, int has_dout, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    const real* gates_t = gates + (size_t)b * 4 * H;
    real* da = dgates + (size_t)b * 4 * H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: gradients pass straight through
        da[j] = 0; da[H + j] = 0; da[2 * H + j] = 0; da[3 * H + j] = 0;
        dh_carry[k] = dh;
        return;
    }
    real o = gates_t[j], i = gates_t[H + j], f = gates_t[2 * H + j], g = gates_t[3 * H + j], tc = tanh_c[k];
    real dc_t = dc[k] + dh * o * (1 - tc * tc);                  // dc += dh * o (1 - tanh(c)^2)
    da[j] = dh * tc * o * (1 - o);                              // da_o
    da[H + j] = dc_t * g * i * (1 - i);                         // da_i
    da[2 * H + j] = dc_t * c_prev[k] * f * (1 - f);             // da_f
    da[3 * H + j] = dc_t * i * (1 - g * g);                     // da_g
    dc[k] = dc_t * f;                                           // dc_{t-1} = dc * f
    dh_carry[k] = 0;                                            // dh_{t-1} = da W_hh: the next GEMM
}
