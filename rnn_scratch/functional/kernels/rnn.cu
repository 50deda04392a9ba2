// The RNN step, fused: RNNFast.forward_step / backward_step of rnn.py, one thread per (row b, unit j).
extern "C" __global__ void rnn_forward_step(
    real* gates, const real* a_hh,            // (B, H): in W_ih x_t + b, W_hh h_{t-1}; gates out phi(a_t)
    const real* h_prev, real* h_new,          // (B, H)
    const bool* valid, int has_mask, int relu, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H;
    real a = gates[k] + a_hh[k];                                 // a_t = W_ih x_t + b + W_hh h_{t-1}
    real h = relu ? (a > 0 ? a : 0) : tanh(a);                   // h_t = phi(a_t)
    gates[k] = h;
    h_new[k] = (!has_mask || valid[b]) ? h : h_prev[k];          // padded steps carry the state through
}

extern "C" __global__ void rnn_backward_step(
    const real* gates, const real* h_prev,    // (B, H): phi(a_t); h_{t-1} (unused)
    const real* dout_t,                       // (B, H) or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,      // dh = dh_carry + dh_gemm (+ dout); carry out
    real* da,                                 // (B, H) out
    const bool* valid, int has_mask, int has_dout, int relu, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: the gradient passes straight through
        da[k] = 0;
        dh_carry[k] = dh;
        return;
    }
    real h = gates[k];
    da[k] = dh * (relu ? (real)(h > 0) : 1 - h * h);            // da_t = dh * phi'(a_t)
    dh_carry[k] = 0;                                            // dh_{t-1} = da_t W_hh: the next GEMM
}
